"""The compiled pipelines as a platform engineer reads them (issue 15): cache keys that can hit and
are safe, GPU count/type and node selector as run parameters, requests = limits, /dev/shm within
the limit, a timeout on every step, the run id from the pod label, an exit handler, UI parameters.
Each rule is also shown to catch the defect it guards against, on a small pipeline with it."""
import pytest
import yaml
from kfp import compiler, dsl

from conftest import REPO
from pipelines import contract, placement
from pipelines.sidreasoner import CONTENT_DERIVED, STEPS, TRAIN_SHM
from sidreasoner_core.run_context import RUN_ID_ENV

COMPILED = sorted((REPO / "pipelines" / "compiled").glob("*.yaml"))
TRAINING = ("sid-alignment", "cold-start", "grpo")


def _docs(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec):
    """(display name, task, executor spec, executor label) of every container task, all DAGs."""
    comps, execs = spec["components"], spec["deploymentSpec"]["executors"]
    stack = [spec["root"]["dag"]] + [c["dag"] for c in comps.values() if "dag" in c]
    for dag in stack:
        for name, task in dag.get("tasks", {}).items():
            label = comps[task["componentRef"]["name"]].get("executorLabel")
            if label and "container" in execs[label]:
                yield task["taskInfo"]["name"], task, execs[label], label


@pytest.fixture(params=[p.name for p in COMPILED])
def compiled(request):
    return REPO / "pipelines" / "compiled" / request.param


# ---------------------------------------------------------------- cache keys

def test_no_cached_task_takes_a_per_run_value(compiled):
    cached = contract.cached_tasks(compiled)
    assert {"data", "semantic-ids", "teacher-enrichment", "sid-alignment", "cold-start", "grpo", "baselines",
            "evaluation", "package-model"} <= set(cached)
    assert contract.cache_key_problems(compiled, CONTENT_DERIVED) == []


def test_data_step_key_holds_the_input_fingerprint(compiled):
    spec, _ = _docs(compiled)
    data = next(task for display, task, _, _ in _tasks(spec) if display == "data")
    fp = data["inputs"]["parameters"]["fingerprint"]["taskOutputParameter"]
    producer = next(task for display, task, _, _ in _tasks(spec) if display == "input-fingerprint")
    assert fp["producerTask"] == next(n for d in [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values()
                                                 if "dag" in c] for n, t in d["tasks"].items() if t is producer)
    assert producer.get("cachingOptions", {}).get("enableCache") is not True  # recomputed every run


def test_the_rule_catches_the_old_wiring(tmp_path):
    """The old DAG: every stage took `parent_run_id` from the uncached start-tracking step, which took
    the run id; and a step given the run id directly."""
    @dsl.component(base_image="python:3.11-slim")
    def start(run_id: str) -> str:
        return run_id

    @dsl.component(base_image="python:3.11-slim")
    def stage(parent_run_id: str, data_uri: str) -> str:
        return parent_run_id + data_uri

    @dsl.pipeline(name="old")
    def old(data_uri: str):
        tracking = start(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        placement.caching(tracking, enabled=False)
        stage(parent_run_id=tracking.output, data_uri=data_uri)
        stage(parent_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, data_uri=data_uri)

    path = tmp_path / "old.yaml"
    compiler.Compiler().compile(old, str(path))
    problems = contract.cache_key_problems(path)
    assert "stage: input 'parent_run_id' comes from the uncached task start" in problems
    assert any("input 'parent_run_id' is a per-run value ({{$.pipeline_job_uuid}})" in p for p in problems)
    # start itself is uncached: its per-run input is allowed unless it is declared content-derived
    assert not any(p.startswith("start:") for p in problems)
    assert any(p.startswith("start: input 'run_id' is a per-run value") for p in contract.cache_key_problems(path, ("start",)))


def test_every_step_gets_the_run_id_from_the_pod_label(compiled):
    spec, k8s = _docs(compiled)
    for display, _, _, label in _tasks(spec):
        env = {e["name"]: e["fieldPath"] for e in k8s.get(label, {}).get("fieldPathAsEnv", [])}
        assert env.get(RUN_ID_ENV) == placement.RUN_ID_FIELD_PATH, display


# ---------------------------------------------------------------- resources, GPUs, timeouts

def test_every_step_requests_its_limits_and_has_a_timeout(compiled):
    spec, k8s = _docs(compiled)
    seen = set()
    for display, _, ex, label in _tasks(spec):
        res = ex["container"].get("resources", {})
        cpu, memory, seconds = STEPS[display]
        assert res.get("resourceCpuRequest") == res.get("resourceCpuLimit") == cpu, display
        assert res.get("resourceMemoryRequest") == res.get("resourceMemoryLimit") == memory, display
        assert k8s[label]["activeDeadlineSeconds"] == str(seconds), display
        for mount in k8s[label].get("emptyDirMounts", []):
            if mount["mountPath"] == "/dev/shm":
                assert placement.quantity(mount["sizeLimit"]) <= placement.quantity(memory) // 2, display
        seen.add(display)
    assert set(TRAINING) | {"data", "input-fingerprint", "resolve-config", "start-tracking", "finish-tracking",
                            "promotion-gate"} <= seen


def test_gpu_count_type_and_node_selector_are_run_parameters(compiled):
    spec, k8s = _docs(compiled)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_gpus"]["defaultValue"] == 8 and params["gpu_type"]["defaultValue"] == placement.GPU_RESOURCE
    assert params["gpu_node_selector"]["defaultValue"] == placement.DEFAULT_GPU_NODE_SELECTOR
    training = {d: (ex, label) for d, _, ex, label in _tasks(spec) if d in TRAINING}
    assert set(training) == set(TRAINING)
    for display, (ex, label) in training.items():
        acc = ex["container"]["resources"]["accelerator"]
        assert acc["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--train_gpus']}}", display
        assert acc["resourceType"] == "{{$.inputs.parameters['pipelinechannel--gpu_type']}}", display
        selector = k8s[label]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert selector == "pipelinechannel--gpu_node_selector", display
        assert {"mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": TRAIN_SHM,
                "volumeName": placement.SHM_VOLUME} in k8s[label]["emptyDirMounts"]
    # the same parameter reaches the config the launcher reads (resolve-config writes num_gpus)
    resolve = next(task for d, task, _, _ in _tasks(spec) if d == "resolve-config")
    assert resolve["inputs"]["parameters"]["train_gpus"] == {"componentInputParameter": "pipelinechannel--train_gpus"}


def test_shm_beyond_half_the_memory_limit_is_refused():
    checked = []

    @dsl.pipeline(name="shm")
    def p():
        task = contract_probe()
        with pytest.raises(ValueError, match="at most half the memory limit"):
            placement.gpu_training(task, shm_size="40Gi", memory="64Gi")
        checked.append(True)

    assert checked == [True]


@dsl.component(base_image="python:3.11-slim")
def contract_probe() -> str:
    return "x"


# ---------------------------------------------------------------- failure handling and UI parameters

def test_exit_handler_closes_the_mlflow_parent_run(compiled):
    spec, _ = _docs(compiled)
    root = spec["root"]["dag"]["tasks"]
    finish = next(t for t in root.values() if t["taskInfo"]["name"] == "finish-tracking")
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert "taskFinalStatus" in finish["inputs"]["parameters"]["status"]
    assert finish.get("cachingOptions", {}).get("enableCache") is not True


def test_ui_parameters_and_imported_inputs(compiled):
    spec, _ = _docs(compiled)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"preset", "config_json", "train_gpus", "gpu_type", "align_max_steps"} <= set(params)
    assert params["preset"]["defaultValue"] == "cluster" and params["config_json"]["defaultValue"] == "{}"
    importers = {}
    for c in [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]:
        for task in c["tasks"].values():
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label and "importer" in spec["deploymentSpec"]["executors"][label]:
                imp = spec["deploymentSpec"]["executors"][label]["importer"]
                importers[imp["typeSchema"]["schemaTitle"]] = imp
    assert set(importers) == {"system.Dataset", "system.Model"}  # the input data and the base model
    assert all(not imp.get("reimport") for imp in importers.values())  # same URI -> same artifact -> same key
