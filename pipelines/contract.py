"""The cluster contract: what each task's code will need under a config, against what its pod gets.

`needs(function, config)` reads a task's effective stage config (a preset, after defaults) and
lists what its code will use: a CUDA device, a number of GPUs, packages (DeepSpeed, vLLM, Ray),
data files read from the image, environment variables. `placements(compiled_yaml)` reads what
the compiled pipeline gives each task: its image, accelerator count and the environment from
secrets/config maps. `violations` compares the two, with the image's contents taken from
its lock file and build context (`pipelines/images.py`). Every mismatch is a failure a user
would otherwise meet hours into a GPU run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines import images

COMPILED = images.REPO / "pipelines" / "compiled"


@dataclass(frozen=True)
class Need:
    kind: str     # "cuda" | "gpus" | "package" | "file" | "env"
    value: object  # True | int | package name | repository-relative path | variable name
    why: str      # the config field that asks for it

    def __str__(self) -> str:
        what = {"cuda": "a CUDA device", "gpus": f"{self.value} GPU(s)", "env": f"env {self.value}"}.get(
            self.kind, f"{self.kind} {self.value}")
        return f"{what} (for {self.why})"


@dataclass
class Placement:
    task: str                 # DAG task name, e.g. "grpo-op"
    display: str              # its display name, e.g. "grpo"
    function: str             # the component function the executor calls
    image: str
    command: list[str]
    args: list[str]
    gpus: int = 0
    env: dict[str, str] = field(default_factory=dict)  # env var -> "secret/<name>:<key>" or "configmap/<name>:<key>"


def _stage(config: dict, section: str):
    from sidreasoner_core.stages import config_class

    return config_class(section).build(dict(config.get(section) or {}), source=f"[{section}]")


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _device_needs(device: str, section: str) -> list[Need]:
    """A CUDA device and one GPU when the section's `device` asks for CUDA."""
    if not _is_cuda(device):
        return []
    why = f"{section}.device: {device}"
    return [Need("cuda", True, why), Need("gpus", 1, why)]


def _local_data_file(path: str) -> bool:
    return "://" not in path and not Path(path).is_absolute()


def _launch_needs(opts, where: str) -> list[Need]:
    """GPUs and DeepSpeed for a trainer's launch options (`where`: e.g. "align.train")."""
    out = []
    if opts.num_gpus > 1:
        out.append(Need("gpus", opts.num_gpus, f"{where}.num_gpus"))
    if opts.deepspeed != "none":
        out += [Need("package", "deepspeed", f"{where}.deepspeed: {opts.deepspeed}"),
                Need("cuda", True, f"{where}.deepspeed: {opts.deepspeed}")]
    return out


OBJECT_STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The tasks whose stage section has a `device` (cuda -> a CUDA device and one GPU), and those whose
# trainer launches one process per GPU (`num_gpus` in that sub-section): the contract reads both here,
# the rehearsal swaps them for their CPU paths (pipelines/rehearsal.py).
DEVICE_SECTIONS = {"sids_op": "sids", "evaluate_op": "evaluate", "promote_op": "promote", "baselines_op": "baselines"}
LAUNCH_SECTIONS = {"align_op": ("align", "train"), "coldstart_op": ("coldstart", "train"), "grpo_op": ("grpo", "cluster")}


def needs(function: str, config: dict) -> list[Need]:
    """What the code behind a component function will need under `config` (a pipeline config mapping)."""
    out: list[Need] = []
    if function == "data_op":  # the only step that opens the object store itself (data_uri=s3://...)
        out += [Need("env", v, "data_uri on the object store") for v in OBJECT_STORE_ENV]
    elif function in DEVICE_SECTIONS:
        section = DEVICE_SECTIONS[function]
        out += _device_needs(_stage(config, section).device, section)
    elif function == "enrich_op":
        cfg = _stage(config, "enrich")
        if cfg.teacher == "openai":
            out.append(Need("env", cfg.api_key_env, "enrich.teacher: openai (enrich.api_key_env)"))
        if cfg.backend == "ray":
            out.append(Need("package", "ray", "enrich.backend: ray"))
            if cfg.ray_engine == "vllm":
                out += [Need("package", "vllm", "enrich.ray_engine: vllm"), Need("gpus", 1, "enrich.ray_engine: vllm")]
    elif function == "align_op":
        cfg = _stage(config, "align")
        out += _launch_needs(cfg.train, "align.train")
        ratios = cfg.effective_ratios()
        if ratios.get("gsm8k", 0) > 0 and _local_data_file(cfg.gsm8k_train):
            out.append(Need("file", cfg.gsm8k_train, "align.gsm8k_train"))
        if cfg.gsm8k_eval_n > 0 and _local_data_file(cfg.gsm8k_test):
            out.append(Need("file", cfg.gsm8k_test, "align.gsm8k_test"))
    elif function == "coldstart_op":
        cfg = _stage(config, "coldstart")
        if cfg.enabled:
            out += _launch_needs(cfg.train, "coldstart.train")
    elif function == "grpo_op":
        cfg = _stage(config, "grpo")
        if cfg.enabled:
            out += _launch_needs(cfg.cluster, "grpo.cluster")
            if cfg.use_vllm:
                out.append(Need("package", "vllm", "grpo.use_vllm"))
                if cfg.vllm_mode == "colocate":
                    out += [Need("cuda", True, "grpo.use_vllm (colocate)"), Need("gpus", 1, "grpo.use_vllm (colocate)")]
    return out


def placements(compiled_yaml: str | Path = COMPILED / "sidreasoner.yaml") -> list[Placement]:
    """Every task of a compiled pipeline (all DAGs) with its image, GPUs and env, in DAG order."""
    docs = list(yaml.safe_load_all(Path(compiled_yaml).read_text()))
    spec, platform = docs[0], (docs[1] if len(docs) > 1 else {})
    k8s = (platform.get("platforms") or {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    comps, execs = spec["components"], spec["deploymentSpec"]["executors"]
    defaults = {name: p.get("defaultValue") for name, p in spec["root"].get("inputDefinitions", {})
                .get("parameters", {}).items()}
    out: list[Placement] = []

    def count(value) -> int:
        """An accelerator count, or a run parameter's placeholder read at its default value."""
        text = str(value or 0)
        if text.startswith("{{$.inputs.parameters['pipelinechannel--"):
            return int(defaults[text.split("pipelinechannel--", 1)[1].split("'", 1)[0]])
        return int(text)

    def walk(dag: dict) -> None:
        for name, task in dag.get("tasks", {}).items():
            comp = comps[task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"])
                continue
            label = comp["executorLabel"]
            if "container" not in execs[label]:  # an importer
                continue
            container = execs[label]["container"]
            acc = (container.get("resources") or {}).get("accelerator") or {}
            env = {}
            for sec in k8s.get(label, {}).get("secretAsEnv", []):
                for kv in sec["keyToEnv"]:
                    env[kv["envVar"]] = f"secret/{sec['secretName']}:{kv['secretKey']}"
            for fp in k8s.get(label, {}).get("fieldPathAsEnv", []):
                env[fp["name"]] = f"fieldpath/{fp['fieldPath']}"
            for cm in k8s.get(label, {}).get("configMapAsEnv", []):
                for kv in cm["keyToEnv"]:
                    env[kv["envVar"]] = f"configmap/{cm['configMapName']}:{kv['configMapKey']}"
            args = container.get("args", [])
            function = args[args.index("--function_to_execute") + 1] if "--function_to_execute" in args else label
            out.append(Placement(task=name, display=task.get("taskInfo", {}).get("name", name), function=function,
                                 image=container["image"], command=container.get("command", []), args=args,
                                 gpus=count(acc.get("resourceCount") or acc.get("count")), env=env))

    walk(spec["root"]["dag"])
    return out


def violations(placement: Placement, task_needs: list[Need], repo: Path = images.REPO) -> list[str]:
    """Each need the placement/image does not meet, as '<task>: needs <need>, but <why not>'."""
    build = images.IMAGES.get(placement.image)
    if build is None:
        return [f"{placement.display}: image {placement.image} is not built by any docker/ Dockerfile "
                f"(pipelines/images.py knows {sorted(images.IMAGES)})"]
    pkgs = images.read_lock(repo / build.lock)
    out = []
    for need in task_needs:
        head = f"{placement.display} ({placement.function}): needs {need}, but "
        if need.kind == "cuda" and not build.cuda:
            out.append(head + f"its image {placement.image} has CPU-only torch")
        elif need.kind == "cuda" and placement.gpus < 1:
            out.append(head + "its placement requests no GPU (nvidia.com/gpu)")
        elif need.kind == "gpus" and placement.gpus < int(need.value):
            out.append(head + f"its placement requests {placement.gpus} GPU(s)")
        elif need.kind == "package" and images.canon(str(need.value)) not in pkgs:
            out.append(head + f"{build.lock} (the lock of {placement.image}) has no {need.value}")
        elif need.kind == "file":
            why = images.in_image(build, str(need.value), repo)
            if why:
                out.append(head + why)
        elif need.kind == "env" and need.value not in placement.env:
            out.append(head + "no secret or config map sets it on the pod")
    return out


def check(config: dict, compiled_yaml: str | Path = COMPILED / "sidreasoner.yaml",
          repo: Path = images.REPO) -> list[str]:
    """All violations of a pipeline config against a compiled pipeline."""
    out = []
    for p in placements(compiled_yaml):
        out += violations(p, needs(p.function, config), repo)
    return out


# ---------------------------------------------------------------- cache keys

# Values that differ between runs of the same pipeline; in a cache key they make every lookup miss.
PER_RUN_PLACEHOLDERS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}",
                        "{{$.pipeline_task_uuid}}", "{{$.pipeline_task_name}}", "{{$.pipeline_job_create_time_utc}}",
                        "{{$.pipeline_job_schedule_time_utc}}")


@dataclass(frozen=True)
class Origin:
    kind: str          # "param" | "const" | "task" | "status"
    value: str         # parameter name, constant text, or producer task name
    cached: bool = False
    display: str = ""


def _origins(spec: dict) -> list[tuple[str, str, bool, dict[str, list[Origin]], dict]]:
    """(task, display name, cached, {input: origins}, task spec) for every container/importer task of
    every DAG, each input traced back through nested DAGs (ExitHandler, ParallelFor) and importers to
    pipeline parameters, constants or the container task that produced it."""
    comps = spec["components"]
    out = []

    def producer_origins(dag: dict, producer: str, key: str, env: dict) -> list[Origin]:
        task = dag["tasks"][producer]
        comp = comps[task["componentRef"]["name"]]
        if "dag" in comp:  # a DAG's output is one of its tasks' outputs
            sel = comp["dag"].get("outputs", {})
            picks = (sel.get("artifacts", {}).get(key, {}).get("artifactSelectors")
                     or [sel.get("parameters", {}).get(key, {}).get("valueFromParameter", {})])
            inner_env = {n: resolve(dag, v, env) for kind in ("parameters", "artifacts")
                         for n, v in task.get("inputs", {}).get(kind, {}).items()}
            found = []
            for p in picks:
                sub = p.get("producerSubtask")
                if sub:
                    found += producer_origins(comp["dag"], sub, p.get("outputArtifactKey") or p.get("outputParameterKey"),
                                              inner_env)
            return found
        if "executorLabel" in comp and "importer" in spec["deploymentSpec"]["executors"][comp["executorLabel"]]:
            # an importer (reimport=False) is its URI: trace the URI
            return [o for v in task.get("inputs", {}).get("parameters", {}).values() for o in resolve(dag, v, env)]
        cached = bool(task.get("cachingOptions", {}).get("enableCache"))
        return [Origin("task", producer, cached, task.get("taskInfo", {}).get("name", producer))]

    def resolve(dag: dict, value: dict, env: dict) -> list[Origin]:
        if "componentInputParameter" in value or "componentInputArtifact" in value:
            name = value.get("componentInputParameter") or value.get("componentInputArtifact")
            return env.get(name, [Origin("param", name)])
        ref = value.get("taskOutputParameter") or value.get("taskOutputArtifact")
        if ref:
            return producer_origins(dag, ref["producerTask"], ref.get("outputParameterKey") or ref.get("outputArtifactKey"), env)
        if "runtimeValue" in value:
            return [Origin("const", str(value["runtimeValue"].get("constant")))]
        if "taskFinalStatus" in value:
            return [Origin("status", value["taskFinalStatus"].get("producerTask", ""))]
        return [Origin("const", str(value))]

    def walk(dag: dict, env: dict) -> None:
        for name, task in dag.get("tasks", {}).items():
            inputs = {n: resolve(dag, v, env) for kind in ("parameters", "artifacts")
                      for n, v in task.get("inputs", {}).get(kind, {}).items()}
            comp = comps[task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"], inputs)
            else:
                out.append((name, task.get("taskInfo", {}).get("name", name),
                            bool(task.get("cachingOptions", {}).get("enableCache")), inputs, task))

    walk(spec["root"]["dag"], {})
    return out


def cache_key_problems(compiled_yaml: str | Path, content_derived: tuple[str, ...] = ()) -> list[str]:
    """Every input of a cached task that changes from run to run: a per-run placeholder, or the output of
    an uncached task. `content_derived` names (display names) uncached tasks whose outputs depend on
    content only (the input's fingerprint, the resolved config): they are uncached so that they are
    recomputed, and their own inputs are held to the same rule."""
    spec = next(iter(yaml.safe_load_all(Path(compiled_yaml).read_text())))
    tasks = _origins(spec)
    checked = {display for _, display, cached, _, _ in tasks if cached or display in content_derived}
    env_of = {}
    for label, ex in spec["deploymentSpec"]["executors"].items():
        env_of[label] = " ".join(str(e.get("value", "")) for e in ex.get("container", {}).get("env", []))
    out = []
    for name, display, cached, inputs, task in tasks:
        if display not in checked:
            continue
        for inp, origins in inputs.items():
            for o in origins:
                where = f"{display}: input {inp!r}"
                if o.kind == "const" and any(p in o.value for p in PER_RUN_PLACEHOLDERS):
                    out.append(f"{where} is a per-run value ({o.value})")
                elif o.kind == "task" and not o.cached and o.display not in content_derived:
                    out.append(f"{where} comes from the uncached task {o.display}")
                elif o.kind == "status":
                    out.append(f"{where} is a task's final status")
        label = spec["components"][task["componentRef"]["name"]].get("executorLabel", "")
        if any(p in env_of.get(label, "") for p in PER_RUN_PLACEHOLDERS):
            out.append(f"{display}: its container env holds a per-run value")
    return out


def cached_tasks(compiled_yaml: str | Path) -> list[str]:
    """Display names of the cached container tasks of a compiled pipeline."""
    spec = next(iter(yaml.safe_load_all(Path(compiled_yaml).read_text())))
    comps, execs = spec["components"], spec["deploymentSpec"]["executors"]
    return sorted(display for _, display, cached, _, task in _origins(spec)
                  if cached and "container" in execs.get(comps[task["componentRef"]["name"]].get("executorLabel"), {}))
