"""The SIDReasoner DAG: one definition for the cluster and for `kfp.local`.

data -> sids -> enrich -> align -> coldstart -> grpo -> evaluate -> package -> promote, with the
baselines beside the model; the promotion gate registers the packaged MLflow model where it
lies and moves `champion` only to a better model. `kfp.local` ignores the placement (GPUs, secrets, retries).
"""
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Model

from components.align import align_op
from components.data import data_op, merge_datasets_op
from components.enrich import enrich_op
from components.evaluation import baselines_op, evaluate_op
from components.reasoning import coldstart_op, grpo_op
from components.sids import sids_op
from components.serving import package_op, promote_op
from components.tracking import finish_tracking_op, fingerprint_op, resolve_config_op, start_tracking_op
from pipelines import placement

PIPELINE_NAME = "sidreasoner"
CROSS_DOMAIN_NAME = "sidreasoner-cross-domain"
# The in-cluster MLflow server of k8s/base/mlflow.yaml, by its short name: it resolves in the run's own
# namespace (`kubeflow` or the profile's; k8s/overlays/). `sidreasoner run` passes its local store instead.
CLUSTER_TRACKING_URI = "http://mlflow:5000"
DEFAULT_PRESET = "cluster"
TRAIN_GPUS = 8  # default GPUs per training step (paper §4.1.3 batch 1024 = 16 x 8 x 8); a run parameter
GPU_TYPE = placement.GPU_RESOURCE
GPU_NODE_SELECTOR = dict(placement.DEFAULT_GPU_NODE_SELECTOR)

# Per step: (cpu, memory) requested = limits, and the timeout in seconds. Training pods are sized
# for one 8-GPU node (paper §4.1.3); /dev/shm stays within half their memory limit.
HOUR = 3600
STEPS = {
    "resolve-config": ("1", "1Gi", 10 * 60),
    "input-fingerprint": ("1", "1Gi", 30 * 60),
    "start-tracking": ("1", "1Gi", 15 * 60),
    "finish-tracking": ("1", "1Gi", 15 * 60),
    "data": ("4", "32Gi", 4 * HOUR),
    "merge-categories": ("4", "32Gi", 2 * HOUR),
    "semantic-ids": ("8", "64Gi", 6 * HOUR),
    "teacher-enrichment": ("4", "16Gi", 48 * HOUR),
    "sid-alignment": ("64", "512Gi", 48 * HOUR),
    "cold-start": ("64", "512Gi", 24 * HOUR),
    "grpo": ("64", "512Gi", 72 * HOUR),
    "baselines": ("8", "64Gi", 6 * HOUR),
    "evaluation": ("16", "128Gi", 12 * HOUR),
    "package-model": ("4", "32Gi", 2 * HOUR),
    "promotion-gate": ("8", "64Gi", 2 * HOUR),  # one GPU: a champion from other data is ranked again
}
TRAIN_SHM = "64Gi"
# Uncached steps whose outputs depend on content only (recomputed each run, so that a new input or an
# edited preset changes the keys of the cached steps that take them); tests hold them to that.
CONTENT_DERIVED = ("input-fingerprint", "resolve-config")


def _place(task, name: str, *, gpus=None, gpu_type=None, node_selector=None, shm: str | None = None):
    """Display name, run id env, resources (requests = limits), timeout; GPUs when `gpus` is given."""
    cpu, memory, seconds = STEPS[name]
    task.set_display_name(name)
    placement.run_id_env(task)
    if gpus is None:
        placement.cpu_resources(task, cpu=cpu, memory=memory)
    else:
        placement.gpu_training(task, accelerator_type=gpu_type, count=gpus, node_selector=node_selector,
                               cpu=cpu, memory=memory, shm_size=shm or "16Gi")
    placement.timeout(task, seconds)
    return task


def _start(*, preset, config_json, train_gpus, gpu_type, model_ref, tracking_uri, experiment, category,
           data_uri=None, data_uris=None):
    """The uncached light steps: resolve-config, start-tracking (and the base model's importer)."""
    config = _place(resolve_config_op(preset=preset, config_json=config_json, train_gpus=train_gpus,
                                      model_ref=model_ref), "resolve-config")
    placement.caching(config, enabled=False)  # a changed preset file must change the stages' keys
    # gpu_type is also a plain input here: kfp 2.17 leaves a channel used only in set_accelerator_type
    # out of the ExitHandler group's inputs, and the GPU steps then cannot resolve it.
    tracking = start_tracking_op(tracking_uri=tracking_uri, experiment=experiment, category=category,
                                 preset=preset, train_gpus=train_gpus, gpu_type=gpu_type,
                                 **({"data_uri": data_uri} if data_uri is not None else {"data_uris": data_uris}))
    _place(tracking, "start-tracking")
    placement.with_secrets(tracking)  # lists the input on the object store
    placement.remote_service(tracking)
    placement.caching(tracking, enabled=False)
    base_model = dsl.importer(artifact_uri=config.outputs["model_uri"], artifact_class=Model, reimport=False)
    base_model.set_display_name("base-model")
    return config, tracking, base_model


def _data(data_uri, *, config_json, category, tracking_uri, tracking):
    """input-fingerprint (uncached) + the input imported as an artifact + the data step."""
    fingerprint = _place(fingerprint_op(data_uri=data_uri), "input-fingerprint")
    placement.with_secrets(fingerprint)
    placement.remote_service(fingerprint)
    placement.caching(fingerprint, enabled=False)  # its output, not its input, must key the data step
    raw = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False).set_display_name("input-data")
    data = data_op(raw=raw.output, fingerprint=fingerprint.output, config_json=config_json,
                   tracking_uri=tracking_uri, **({"category": category} if category is not None else {}))
    _place(data, "data").after(tracking)  # the parent run exists before any stage logs under it
    placement.with_secrets(data)
    return data


def _model_stages(dataset, *, config_json, base_model, teacher_base_url, teacher_model, align_max_steps,
                  coldstart_max_steps, grpo_max_steps, grpo_num_generations, tracking_uri, model_name,
                  model_alias, train_gpus, gpu_type, gpu_node_selector):
    """Everything after the dataset: shared by the single-category and cross-domain pipelines
    (keyword arguments: the pipelines' parameters of the same names)."""
    track = dict(tracking_uri=tracking_uri)
    gpu = dict(gpu_type=gpu_type, node_selector=gpu_node_selector)
    sids = sids_op(dataset=dataset, config_json=config_json, **track)
    _place(sids, "semantic-ids", gpus=1, **gpu)  # sentence encoder + RQ-VAE (config sids.device)

    enrich = enrich_op(dataset=dataset, sids=sids.outputs["sids"], config_json=config_json,
                       teacher_base_url=teacher_base_url, teacher_model=teacher_model, **track)
    _place(enrich, "teacher-enrichment")
    placement.remote_service(enrich)
    placement.with_secrets(enrich, teacher=True)

    align = align_op(dataset=dataset, sids=sids.outputs["sids"], corpus=enrich.outputs["corpus"],
                     config_json=config_json, base_model=base_model, max_steps=align_max_steps, **track)
    coldstart = coldstart_op(aligned_model=align.outputs["aligned_model"], dataset=dataset, sids=sids.outputs["sids"],
                             corpus=enrich.outputs["corpus"], config_json=config_json,
                             max_steps=coldstart_max_steps, **track)
    grpo = grpo_op(model_in=coldstart.outputs["model"], dataset=dataset, sids=sids.outputs["sids"],
                   config_json=config_json, max_steps=grpo_max_steps, num_generations=grpo_num_generations, **track)
    for task, name in ((align, "sid-alignment"), (coldstart, "cold-start"), (grpo, "grpo")):
        _place(task, name, gpus=train_gpus, shm=TRAIN_SHM, **gpu)  # the same count as the launcher's processes
        placement.with_secrets(task)

    baselines = _place(baselines_op(dataset=dataset, config_json=config_json, **track), "baselines")
    evaluate = evaluate_op(dataset=dataset, sids=sids.outputs["sids"], model=grpo.outputs["model"],
                           baselines=baselines.outputs["baselines"], config_json=config_json, **track)
    _place(evaluate, "evaluation", gpus=1, **gpu)
    package = package_op(model=grpo.outputs["model"], dataset=dataset, sids=sids.outputs["sids"],
                         config_json=config_json)
    _place(package, "package-model")
    promote = promote_op(served_model=package.outputs["served_model"], dataset=dataset,
                         evaluation=evaluate.outputs["evaluation"], baselines=baselines.outputs["baselines"],
                         config_json=config_json, model_name=model_name, alias=model_alias, **track)
    _place(promote, "promotion-gate", gpus=1, **gpu)
    for task in (sids, baselines, evaluate, package, promote):
        placement.with_secrets(task)  # object-store credentials (training steps and enrich got theirs above)
    placement.caching(promote, enabled=False)
    return evaluate


def _finish(tracking_uri):
    finish = finish_tracking_op(tracking_uri=tracking_uri)
    _place(finish, "finish-tracking")
    placement.with_secrets(finish)  # the pipeline's MLflow user (the server asks for one)
    placement.remote_service(finish)  # MLflow may be briefly unreachable; the parent run must be closed
    placement.caching(finish, enabled=False)
    return finish


@dsl.pipeline(name=PIPELINE_NAME,
              description="SIDReasoner: data -> SIDs -> enrichment -> alignment -> cold-start -> GRPO -> evaluation")
def sidreasoner_pipeline(
    data_uri: str,
    category: str = "",
    preset: str = DEFAULT_PRESET,
    config_json: str = "{}",
    train_gpus: int = TRAIN_GPUS,
    gpu_type: str = GPU_TYPE,
    gpu_node_selector: dict = GPU_NODE_SELECTOR,
    model_ref: str = "",
    teacher_base_url: str = "",
    teacher_model: str = "",
    align_max_steps: int = 0,
    coldstart_max_steps: int = 0,
    grpo_max_steps: int = 0,
    grpo_num_generations: int = 0,
    tracking_uri: str = CLUSTER_TRACKING_URI,
    experiment: str = "sidreasoner",
    model_name: str = "sidreasoner",
    model_alias: str = "candidate",
):
    """`preset` names the base config and `config_json` overrides fields of it ("{}": the preset as
    shipped). `train_gpus` GPUs of resource `gpu_type` on nodes matching `gpu_node_selector` per
    training step (also their process count). Empty/0 knobs take the config's value."""
    with dsl.ExitHandler(_finish(tracking_uri), name="pipeline"):
        config, tracking, base_model = _start(
            preset=preset, config_json=config_json, train_gpus=train_gpus, gpu_type=gpu_type, model_ref=model_ref,
            tracking_uri=tracking_uri, experiment=experiment, category=category, data_uri=data_uri)
        resolved = config.outputs["config_json"]
        data = _data(data_uri, config_json=resolved, category=category, tracking_uri=tracking_uri, tracking=tracking)
        _model_stages(data.outputs["dataset"], config_json=resolved, base_model=base_model.output,
                      teacher_base_url=teacher_base_url, teacher_model=teacher_model,
                      align_max_steps=align_max_steps, coldstart_max_steps=coldstart_max_steps,
                      grpo_max_steps=grpo_max_steps, grpo_num_generations=grpo_num_generations,
                      tracking_uri=tracking_uri, model_name=model_name, model_alias=model_alias,
                      train_gpus=train_gpus, gpu_type=gpu_type, gpu_node_selector=gpu_node_selector)


@dsl.pipeline(name=CROSS_DOMAIN_NAME,
              description="Cross-domain SIDReasoner: several categories quantized into one SID space (paper §4.2.2)")
def cross_domain_pipeline(
    data_uris: List[str],
    preset: str = DEFAULT_PRESET,
    config_json: str = "{}",
    train_gpus: int = TRAIN_GPUS,
    gpu_type: str = GPU_TYPE,
    gpu_node_selector: dict = GPU_NODE_SELECTOR,
    model_ref: str = "",
    teacher_base_url: str = "",
    teacher_model: str = "",
    align_max_steps: int = 0,
    coldstart_max_steps: int = 0,
    grpo_max_steps: int = 0,
    grpo_num_generations: int = 0,
    tracking_uri: str = CLUSTER_TRACKING_URI,
    experiment: str = "sidreasoner-cross-domain",
    model_name: str = "sidreasoner-cross-domain",
    model_alias: str = "candidate",
):
    with dsl.ExitHandler(_finish(tracking_uri), name="pipeline"):
        config, tracking, base_model = _start(
            preset=preset, config_json=config_json, train_gpus=train_gpus, gpu_type=gpu_type, model_ref=model_ref,
            tracking_uri=tracking_uri, experiment=experiment, category="cross-domain", data_uris=data_uris)
        resolved = config.outputs["config_json"]
        with dsl.ParallelFor(items=data_uris) as uri:
            data = _data(uri, config_json=resolved, category=None, tracking_uri=tracking_uri, tracking=tracking)
        merged = merge_datasets_op(datasets=dsl.Collected(data.outputs["dataset"]))
        _place(merged, "merge-categories")
        _model_stages(merged.outputs["merged"], config_json=resolved, base_model=base_model.output,
                      teacher_base_url=teacher_base_url, teacher_model=teacher_model,
                      align_max_steps=align_max_steps, coldstart_max_steps=coldstart_max_steps,
                      grpo_max_steps=grpo_max_steps, grpo_num_generations=grpo_num_generations,
                      tracking_uri=tracking_uri, model_name=model_name, model_alias=model_alias,
                      train_gpus=train_gpus, gpu_type=gpu_type, gpu_node_selector=gpu_node_selector)
