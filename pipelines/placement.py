"""Cluster placement of pipeline tasks: GPUs, node pools, shared memory, secrets, retries, caching.

Every function takes a `PipelineTask`, changes its platform spec and returns it, so calls chain.
`kfp.local` ignores all of this, so the same DAG runs on a laptop and on the cluster. Names of
Kubernetes objects used here (secrets, config map, node labels) match the manifests in `k8s/`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

from kfp import kubernetes
from kfp.dsl import PipelineTask

# GPU nodes as labelled by NVIDIA GPU feature discovery (part of the GPU Operator); see k8s/gpu-node-pool.md.
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_NODE_SELECTOR: dict[str, str] = {"nvidia.com/gpu.present": "true"}
# GPU pools are usually tainted so CPU pods stay off them; training pods tolerate the taint.
DEFAULT_GPU_TOLERATIONS: tuple[dict, ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
)
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"

# Secrets (k8s/secrets/*.template.yaml) and the env names the library reads.
TEACHER_SECRET = "sidreasoner-teacher"
TEACHER_SECRET_KEYS = {"api-key": "OPENAI_API_KEY"}
OBJECT_STORE_SECRET = "sidreasoner-object-store"
OBJECT_STORE_SECRET_KEYS = {"access-key": "AWS_ACCESS_KEY_ID", "secret-key": "AWS_SECRET_ACCESS_KEY"}
# The pipeline's MLflow user (the server runs MLflow's basic-auth app: k8s/base/mlflow.yaml).
MLFLOW_SECRET = "sidreasoner-mlflow-pipeline"
MLFLOW_SECRET_KEYS = {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
# Non-secret settings (k8s/base/platform-config.yaml): object store endpoint and region, and where a
# retried step finds its run's checkpoints and teacher answers (sidreasoner_core/step_state.py).
PLATFORM_CONFIG_MAP = "sidreasoner-config"
PLATFORM_CONFIG_KEYS = {
    "s3-endpoint": "AWS_ENDPOINT_URL_S3",
    "mlflow-s3-endpoint": "MLFLOW_S3_ENDPOINT_URL",
    "aws-region": "AWS_DEFAULT_REGION",
    "state-uri": "SIDREASONER_STATE_URI",
}


def gpu_training(task: PipelineTask, accelerator_type=GPU_RESOURCE, count=1,
                 node_selector=None, tolerations: Optional[Iterable[Mapping]] = None,
                 shm_size: Optional[str] = "16Gi", cpu: str = "8", memory: str = "64Gi") -> PipelineTask:
    """Place a training/rollout step on GPU nodes.

    Requests `count` accelerators of `accelerator_type` (ints/strings, or pipeline parameters:
    KFP resolves them when the pod is made), pins the pod with `node_selector` (a dict, or a
    pipeline parameter holding one; default: nodes with an NVIDIA GPU) and tolerates
    `tolerations` (default: the GPU taint). CPU and memory requests equal their limits (the pod
    is Guaranteed, never the first evicted). Mounts a memory-backed emptyDir on /dev/shm:
    PyTorch dataloaders, NCCL and vLLM need more than the 64 MiB a container gets by default;
    it counts against the memory limit, so it must fit well inside it. Pass `{}`/`()` to skip
    selector/tolerations.
    """
    if isinstance(count, int) and count < 1:
        raise ValueError(f"gpu_training: count must be >= 1, got {count}")
    if shm_size and quantity(shm_size) > quantity(memory) // 2:
        raise ValueError(f"gpu_training: /dev/shm {shm_size} must be at most half the memory limit {memory} "
                         "(a memory-backed emptyDir counts against it)")
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(count)
    requests_equal_limits(task, cpu, memory)
    selector = DEFAULT_GPU_NODE_SELECTOR if node_selector is None else node_selector
    if isinstance(selector, Mapping):
        for key, value in selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
    else:  # a pipeline parameter (dict) chosen per run
        kubernetes.add_node_selector_json(task, selector)
    for tol in (DEFAULT_GPU_TOLERATIONS if tolerations is None else tolerations):
        unknown = set(tol) - {"key", "operator", "value", "effect", "toleration_seconds"}
        if unknown:
            raise ValueError(f"gpu_training: unknown toleration field(s) {sorted(unknown)} in {dict(tol)}")
        kubernetes.add_toleration(task, **tol)
    if shm_size is not None:
        kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path=SHM_PATH,
                                   medium="Memory", size_limit=shm_size or None)
    return task


def requests_equal_limits(task: PipelineTask, cpu: str, memory: str) -> PipelineTask:
    """Request (and cap at) `cpu` cores and `memory`: requests equal to limits make the pod Guaranteed."""
    return task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


def cpu_resources(task: PipelineTask, cpu: str = "2", memory: str = "8Gi") -> PipelineTask:
    """Request (and cap at) `cpu` cores and `memory` for a CPU step."""
    return requests_equal_limits(task, cpu, memory)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value: str) -> int:
    """Bytes of a Kubernetes memory quantity ("16Gi", "512M", "1024")."""
    text = str(value)
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * _UNITS[unit])
    return int(text)


def remote_service(task: PipelineTask, num_retries: int = 3, backoff_duration: str = "30s",
                   backoff_factor: float = 2.0, backoff_max_duration: str = "3600s") -> PipelineTask:
    """Retry a step that calls a remote service (teacher API, object store) with exponential backoff."""
    if num_retries < 0:
        raise ValueError(f"remote_service: num_retries must be >= 0, got {num_retries}")
    if backoff_factor < 1:
        raise ValueError(f"remote_service: backoff_factor must be >= 1, got {backoff_factor}")
    return task.set_retry(num_retries=num_retries, backoff_duration=backoff_duration,
                          backoff_factor=backoff_factor, backoff_max_duration=backoff_max_duration)


def with_secrets(task: PipelineTask, teacher: bool = False, object_store: bool = True,
                 teacher_secret: str = TEACHER_SECRET, object_store_secret: str = OBJECT_STORE_SECRET,
                 platform_config: Optional[str] = PLATFORM_CONFIG_MAP) -> PipelineTask:
    """Expose credentials to a step as environment variables, never as parameters.

    teacher: the teacher LLM API key (`OPENAI_API_KEY`); object_store: the S3 access/secret key
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) and the pipeline's MLflow user
    (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`). `platform_config` names the ConfigMap with
    the non-secret S3 endpoint and region (None to skip). Values never enter the compiled YAML.
    """
    if teacher:
        kubernetes.use_secret_as_env(task, secret_name=teacher_secret, secret_key_to_env=dict(TEACHER_SECRET_KEYS))
    if object_store:
        kubernetes.use_secret_as_env(task, secret_name=object_store_secret,
                                     secret_key_to_env=dict(OBJECT_STORE_SECRET_KEYS))
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=dict(MLFLOW_SECRET_KEYS))
        if platform_config:
            kubernetes.use_config_map_as_env(task, config_map_name=platform_config,
                                             config_map_key_to_env=dict(PLATFORM_CONFIG_KEYS))
    return task


def caching(task: PipelineTask, enabled: bool = True, cache_key: Optional[str] = None) -> PipelineTask:
    """Turn KFP result caching on/off for a step (off for steps with side effects, e.g. tracking)."""
    return task.set_caching_options(enable_caching=enabled, cache_key=cache_key)


def timeout(task: PipelineTask, seconds: int) -> PipelineTask:
    """Kill the step's pod after `seconds` (a hung rollout or API call must not hold GPUs forever)."""
    return kubernetes.set_timeout(task, seconds)


# The KFP run id is a label of every pod of a run; the downward API hands it to the step as an env var.
RUN_ID_FIELD_PATH = "metadata.labels['pipeline/runid']"


def run_id_env(task: PipelineTask) -> PipelineTask:
    """Give the step its pipeline run id as `SIDREASONER_RUN_ID` (never as a parameter: parameters are
    part of KFP's cache key, and a per-run value in it makes every lookup miss)."""
    from sidreasoner_core.run_context import RUN_ID_ENV

    return kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=RUN_ID_FIELD_PATH)
