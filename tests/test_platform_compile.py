"""Compiled pipelines: committed YAML is current (CI fails otherwise), and placement settings
(GPUs, node selector, tolerations, /dev/shm, secrets as env, retries, caching) reach the
platform spec. A tiny pipeline exercises every placement function before the stages are wired;
the real `pipelines/compiled/*.yaml` is checked for the parts that exist."""

import pytest
import yaml
from kfp import compiler, dsl
from typer.testing import CliRunner

from conftest import REPO
from pipelines import placement
from sidreasoner_core.cli import app
from sidreasoner_core.pipeline_cli import compile_pipelines, discover_pipelines, stale_compiled

COMPILED = REPO / "pipelines" / "compiled"


def load_docs(path):
    """(pipeline spec, kubernetes platform spec or {}) of a compiled YAML."""
    docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def executor_of(spec, task_name):
    task = spec["root"]["dag"]["tasks"][task_name]
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


# ---------------------------------------------------------------- committed YAML is current

def test_committed_yaml_is_up_to_date():
    problems = stale_compiled(COMPILED)
    assert not problems, f"run `sidreasoner compile` and commit: {problems}"


def test_every_pipeline_has_a_committed_yaml():
    names = set(discover_pipelines())
    assert "sidreasoner" in names
    assert {p.stem for p in COMPILED.glob("*.yaml")} == names


def test_compile_check_fails_when_out_of_date(tmp_path):
    runner = CliRunner()
    out = tmp_path / "compiled"
    assert runner.invoke(app, ["compile", "--out", str(out)]).exit_code == 0
    ok = runner.invoke(app, ["compile", "--check", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    target = out / "sidreasoner.yaml"
    target.write_text(target.read_text().replace("sidreasoner", "sidreasoner-old", 1))
    stale = runner.invoke(app, ["compile", "--check", "--out", str(out)])
    assert stale.exit_code == 1 and "sidreasoner.yaml (out of date)" in stale.output
    (out / "orphan.yaml").write_text("x: 1\n")
    target.unlink()
    worse = runner.invoke(app, ["compile", "--check", "--out", str(out)])
    assert worse.exit_code == 1
    assert "sidreasoner.yaml (missing)" in worse.output and "orphan.yaml (no pipeline defines it)" in worse.output
    # Compiling fresh fixes the check (the orphan stays flagged until removed).
    (out / "orphan.yaml").unlink()
    assert runner.invoke(app, ["compile", "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["compile", "--check", "--out", str(out)]).exit_code == 0


def test_compile_is_deterministic(tmp_path):
    first = {p.name: p.read_bytes() for p in compile_pipelines(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in compile_pipelines(tmp_path / "b")}
    assert first == second


# ---------------------------------------------------------------- placement on a tiny pipeline

@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def train_op(steps: int, data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]):
    import pathlib

    pathlib.Path(model.path).write_text(f"{steps} {data.path}")


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def teacher_op(prompt: str, corpus: dsl.Output[dsl.Dataset]):
    import pathlib

    pathlib.Path(corpus.path).write_text(prompt)


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def track_op(name: str) -> str:
    return name


@dsl.pipeline(name="placement-probe")
def probe_pipeline(prompt: str = "hello", steps: int = 2):
    teacher = teacher_op(prompt=prompt)
    placement.remote_service(teacher, num_retries=4, backoff_duration="15s", backoff_factor=3.0)
    placement.with_secrets(teacher, teacher=True)
    placement.cpu_resources(teacher, cpu="1", memory="2Gi")
    train = train_op(steps=steps, data=teacher.outputs["corpus"])
    placement.gpu_training(train, accelerator_type="nvidia.com/gpu", count=4,
                           node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                        {"key": "dedicated", "operator": "Equal", "value": "training",
                                         "effect": "NoExecute"}],
                           shm_size="32Gi", cpu="16", memory="200Gi")
    placement.with_secrets(train)
    placement.timeout(train, 6 * 3600)
    placement.caching(train, True)
    track = track_op(name=prompt)
    placement.caching(track, False)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "probe.yaml"
    compiler.Compiler().compile(probe_pipeline, str(path))
    return load_docs(path)


def test_gpu_training_requests_accelerators_on_the_gpu_pool(probe):
    spec, platform = probe
    ex = executor_of(spec, "train-op")
    res = spec["deploymentSpec"]["executors"][ex]["container"]["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["accelerator"]["resourceCount"] == "4"
    assert res["resourceCpuLimit"] == "16" and res["resourceMemoryLimit"] == "200Gi"
    k8s = platform[ex]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"} in k8s["tolerations"]
    assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "32Gi",
                                      "volumeName": "dshm"}]
    assert k8s["activeDeadlineSeconds"] == str(6 * 3600)


def test_gpu_training_defaults_target_nvidia_nodes(tmp_path):
    @dsl.pipeline(name="defaults")
    def p():
        placement.gpu_training(track_op(name="x"))

    compiler.Compiler().compile(p, str(tmp_path / "d.yaml"))
    spec, platform = load_docs(tmp_path / "d.yaml")
    ex = executor_of(spec, "track-op")
    assert spec["deploymentSpec"]["executors"][ex]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert platform[ex]["nodeSelector"]["labels"] == placement.DEFAULT_GPU_NODE_SELECTOR
    assert platform[ex]["tolerations"] == [dict(t) for t in placement.DEFAULT_GPU_TOLERATIONS]
    assert platform[ex]["emptyDirMounts"][0]["medium"] == "Memory"


def test_remote_service_retries_with_backoff(probe):
    spec, _ = probe
    retry = spec["root"]["dag"]["tasks"]["teacher-op"]["retryPolicy"]
    assert retry == {"maxRetryCount": 4, "backoffDuration": "15s", "backoffFactor": 3.0,
                     "backoffMaxDuration": "3600s"}
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["train-op"]


def test_secrets_reach_steps_as_env_only(probe):
    spec, platform = probe
    teacher = platform[executor_of(spec, "teacher-op")]
    by_name = {s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]} for s in teacher["secretAsEnv"]}
    assert by_name[placement.TEACHER_SECRET] == {"api-key": "OPENAI_API_KEY"}
    assert by_name[placement.OBJECT_STORE_SECRET] == {"access-key": "AWS_ACCESS_KEY_ID",
                                                      "secret-key": "AWS_SECRET_ACCESS_KEY"}
    cm = teacher["configMapAsEnv"][0]
    assert cm["configMapName"] == placement.PLATFORM_CONFIG_MAP
    assert {k["envVar"] for k in cm["keyToEnv"]} >= {"AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"}
    train = platform[executor_of(spec, "train-op")]
    assert [s["secretName"] for s in train["secretAsEnv"]] == [placement.OBJECT_STORE_SECRET,
                                                               placement.MLFLOW_SECRET]  # no teacher key
    mlflow_user = {k["secretKey"]: k["envVar"] for s in train["secretAsEnv"] if s["secretName"] == placement.MLFLOW_SECRET
                   for k in s["keyToEnv"]}
    assert mlflow_user == {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
    # Secrets are referenced by name: no env var of the container spec carries a value for them.
    for ex in spec["deploymentSpec"]["executors"].values():
        env = {e["name"] for e in ex["container"].get("env", [])}
        assert not env & {"OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"}


def test_caching_options(probe):
    spec, _ = probe
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train-op"]["cachingOptions"] == {"enableCache": True}
    assert tasks["track-op"]["cachingOptions"] == {}  # disabled


def test_placement_rejects_bad_arguments():
    checked = []

    @dsl.pipeline(name="bad")
    def p():  # the body runs when the decorator builds the pipeline
        task = track_op(name="x")
        with pytest.raises(ValueError, match="count"):
            placement.gpu_training(task, count=0)
        with pytest.raises(ValueError, match="toleration"):
            placement.gpu_training(task, tolerations=[{"key": "a", "effet": "NoSchedule"}])
        with pytest.raises(ValueError, match="backoff_factor"):
            placement.remote_service(task, backoff_factor=0.5)
        checked.append("all three refused")

    assert checked == ["all three refused"]


# ---------------------------------------------------------------- the real compiled pipeline

@pytest.fixture(scope="module", params=sorted(p.name for p in COMPILED.glob("*.yaml")))
def real(request):
    """Each committed pipeline (the main one and its variants)."""
    return load_docs(COMPILED / request.param)


def test_main_pipeline_parameters():
    spec, _ = load_docs(COMPILED / "sidreasoner.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_uri", "category", "config_json", "tracking_uri", "experiment"} <= set(params)


def test_real_pipeline_parameters_and_images(real):
    from components import images

    spec, _ = real
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"config_json", "tracking_uri", "experiment"} <= set(params)
    assert spec["sdkVersion"] == "kfp-2.17.3"  # the pinned kfp; recompile when it changes
    allowed = {images.CPU_IMAGE, images.TRAINER_IMAGE, images.ROLLOUT_IMAGE}
    for name, ex in spec["deploymentSpec"]["executors"].items():
        if "importer" in ex:  # the input data and base model (dsl.importer): no image
            continue
        assert ex["container"]["image"] in allowed, f"{name} uses {ex['container']['image']}"


def test_real_pipeline_tracking_is_never_cached(real):
    spec, _ = real
    tasks = spec["root"]["dag"]["tasks"]
    tracking = [t for t in tasks if "tracking" in t]
    assert tracking, "the pipeline opens an MLflow parent run"
    for t in tracking:
        assert tasks[t].get("cachingOptions", {}).get("enableCache") is not True


def _all_tasks(spec):
    """(task name, task) over the root DAG and nested DAGs (ParallelFor, If)."""
    stack = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in stack:
        yield from dag.get("tasks", {}).items()


def test_real_pipeline_gpu_steps_are_placed(real):
    """Every step that asks for an accelerator also gets the GPU pool, its taint toleration, /dev/shm
    and a GPU image; holds as training stages are wired in."""
    from components import images

    spec, platform = real
    gpu_execs = [n for n, ex in spec["deploymentSpec"]["executors"].items()
                 if "accelerator" in ex.get("container", {}).get("resources", {})]
    assert gpu_execs, "no step asks for a GPU: the training steps lost their placement"
    for ex in gpu_execs:
        k8s = platform.get(ex, {})
        selector = k8s.get("nodeSelector", {})
        assert selector.get("labels") or selector.get("nodeSelectorJson"), f"{ex}: GPU step without node selector"
        assert k8s.get("tolerations"), f"{ex}: GPU step without tolerations"
        assert any(m["mountPath"] == "/dev/shm" and m.get("medium") == "Memory"
                   for m in k8s.get("emptyDirMounts", [])), f"{ex}: GPU step without /dev/shm"
        image = spec["deploymentSpec"]["executors"][ex]["container"]["image"]
        assert image in (images.TRAINER_IMAGE, images.ROLLOUT_IMAGE), f"{ex}: GPU step on {image}"


def test_real_pipeline_teacher_steps_retry(real):
    """A step given the teacher key calls a remote API: it must retry with backoff."""
    spec, platform = real
    teacher_tasks = []
    for name, task in _all_tasks(spec):
        comp = task["componentRef"]["name"]
        ex = spec["components"][comp].get("executorLabel")
        secrets = {s["secretName"] for s in platform.get(ex, {}).get("secretAsEnv", [])}
        if placement.TEACHER_SECRET in secrets:
            teacher_tasks.append(name)
            retry = task.get("retryPolicy", {})
            assert retry.get("maxRetryCount", 0) >= 1 and retry.get("backoffDuration"), f"{name} does not retry"
    assert teacher_tasks, "no step gets the teacher key: enrichment lost its placement"


def test_ci_runs_the_tests_and_the_compile_check():
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    runs = "\n".join(step.get("run", "") for job in ci["jobs"].values() for step in job["steps"])
    assert "make test" in runs
    assert "sidreasoner compile --check" in runs


def test_real_pipeline_steps_that_talk_to_mlflow_get_its_user(real):
    """MLflow runs its basic-auth app (k8s/base/mlflow.yaml): every step given the tracking URI must
    also get the pipeline's MLflow user from its secret, or the server refuses it."""
    spec, platform = real
    checked = []
    for name, task in _all_tasks(spec):
        comp = spec["components"][task["componentRef"]["name"]]
        if "tracking_uri" not in comp.get("inputDefinitions", {}).get("parameters", {}):
            continue
        secrets = {s["secretName"]: {k["envVar"] for k in s["keyToEnv"]}
                   for s in platform.get(comp["executorLabel"], {}).get("secretAsEnv", [])}
        assert secrets.get(placement.MLFLOW_SECRET) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}, name
        checked.append(name)
    assert any("tracking" in n for n in checked) and len(checked) >= 5
