"""The SIDReasoner DAG: one definition for the cluster and for `kfp.local`.

data -> sids -> enrich -> align -> coldstart -> grpo -> evaluate -> package -> promote, with the
baselines beside the model; the promotion gate registers the packaged MLflow model where it
lies and moves `champion` only to a better model. `kfp.local` ignores the placement (GPUs, secrets, retries).
"""
from typing import List

from kfp import dsl

from components.align import align_op
from components.data import data_op, merge_datasets_op
from components.enrich import enrich_op
from components.evaluation import baselines_op, evaluate_op
from components.reasoning import coldstart_op, grpo_op
from components.sids import sids_op
from components.serving import package_op, promote_op
from components.tracking import start_tracking_op
from pipelines import placement

PIPELINE_NAME = "sidreasoner"
CROSS_DOMAIN_NAME = "sidreasoner-cross-domain"
# The in-cluster MLflow server of k8s/base/mlflow.yaml, by its short name: it resolves in the run's own
# namespace (`kubeflow` or the profile's; k8s/overlays/). `sidreasoner run` passes its local store instead.
CLUSTER_TRACKING_URI = "http://mlflow:5000"
TRAIN_GPUS = 8  # per training step (paper §4.1.3 batch 1024 = 16 x 8 x 8); config `num_gpus` <= this


def _model_stages(dataset, *, config_json, model_ref, teacher_base_url, teacher_model, coldstart_max_steps,
                  grpo_max_steps, grpo_num_generations, tracking_uri, parent_run_id, model_name, model_alias):
    """Everything after the dataset: shared by the single-category and cross-domain pipelines
    (keyword arguments: the pipelines' parameters of the same names)."""
    track = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    sids = sids_op(dataset=dataset, config_json=config_json, **track).set_display_name("semantic-ids")
    placement.gpu_training(sids, count=1)  # sentence encoder + RQ-VAE (config sids.device)

    enrich = enrich_op(dataset=dataset, sids=sids.outputs["sids"], config_json=config_json,
                       teacher_base_url=teacher_base_url, teacher_model=teacher_model, **track)
    enrich.set_display_name("teacher-enrichment")
    placement.remote_service(enrich)
    placement.with_secrets(enrich, teacher=True)

    align = align_op(dataset=dataset, sids=sids.outputs["sids"], corpus=enrich.outputs["corpus"],
                     config_json=config_json, model_ref=model_ref, **track).set_display_name("sid-alignment")
    coldstart = coldstart_op(aligned_model=align.outputs["aligned_model"], dataset=dataset, sids=sids.outputs["sids"],
                             corpus=enrich.outputs["corpus"], config_json=config_json,
                             max_steps=coldstart_max_steps, **track).set_display_name("cold-start")
    grpo = grpo_op(model_in=coldstart.outputs["model"], dataset=dataset, sids=sids.outputs["sids"],
                   config_json=config_json, max_steps=grpo_max_steps, num_generations=grpo_num_generations,
                   **track).set_display_name("grpo")
    for task in (align, coldstart, grpo):
        placement.gpu_training(task, count=TRAIN_GPUS)
        placement.with_secrets(task)

    baselines = baselines_op(dataset=dataset, config_json=config_json, **track).set_display_name("baselines")
    evaluate = evaluate_op(dataset=dataset, sids=sids.outputs["sids"], model=grpo.outputs["model"],
                           baselines=baselines.outputs["baselines"], config_json=config_json,
                           **track).set_display_name("evaluation")
    placement.gpu_training(evaluate, count=1)
    package = package_op(model=grpo.outputs["model"], dataset=dataset, sids=sids.outputs["sids"],
                         config_json=config_json).set_display_name("package-model")
    promote = promote_op(served_model=package.outputs["served_model"], dataset=dataset,
                         evaluation=evaluate.outputs["evaluation"], baselines=baselines.outputs["baselines"],
                         config_json=config_json, model_name=model_name, alias=model_alias,
                         **track).set_display_name("promotion-gate")
    for task in (sids, baselines, evaluate, package, promote):
        placement.with_secrets(task)  # object-store credentials (training steps and enrich got theirs above)
    placement.caching(promote, enabled=False)
    return evaluate


@dsl.pipeline(name=PIPELINE_NAME,
              description="SIDReasoner: data -> SIDs -> enrichment -> alignment -> cold-start -> GRPO -> evaluation")
def sidreasoner_pipeline(
    data_uri: str,
    category: str = "",
    config_json: str = "{}",
    model_ref: str = "",
    teacher_base_url: str = "",
    teacher_model: str = "",
    coldstart_max_steps: int = 0,
    grpo_max_steps: int = 0,
    grpo_num_generations: int = 0,
    tracking_uri: str = CLUSTER_TRACKING_URI,
    experiment: str = "sidreasoner",
    model_name: str = "sidreasoner",
    model_alias: str = "candidate",
):
    """Parameters left empty/0 take the value of `config_json` (a preset's JSON) or its default."""
    tracking = start_tracking_op(tracking_uri=tracking_uri, experiment=experiment,
                                 kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, category=category)
    tracking.set_display_name("start-tracking")
    placement.caching(tracking, enabled=False)
    placement.with_secrets(tracking)  # the pipeline's MLflow user (the server asks for one)
    data = data_op(data_uri=data_uri, config_json=config_json, category=category,
                   tracking_uri=tracking_uri, parent_run_id=tracking.output).set_display_name("data")
    placement.with_secrets(data)
    _model_stages(data.outputs["dataset"], config_json=config_json, model_ref=model_ref,
                  teacher_base_url=teacher_base_url, teacher_model=teacher_model,
                  coldstart_max_steps=coldstart_max_steps, grpo_max_steps=grpo_max_steps,
                  grpo_num_generations=grpo_num_generations, tracking_uri=tracking_uri,
                  parent_run_id=tracking.output, model_name=model_name, model_alias=model_alias)


@dsl.pipeline(name=CROSS_DOMAIN_NAME,
              description="Cross-domain SIDReasoner: several categories quantized into one SID space (paper §4.2.2)")
def cross_domain_pipeline(
    data_uris: List[str],
    config_json: str = "{}",
    model_ref: str = "",
    teacher_base_url: str = "",
    teacher_model: str = "",
    coldstart_max_steps: int = 0,
    grpo_max_steps: int = 0,
    grpo_num_generations: int = 0,
    tracking_uri: str = CLUSTER_TRACKING_URI,
    experiment: str = "sidreasoner-cross-domain",
    model_name: str = "sidreasoner-cross-domain",
    model_alias: str = "candidate",
):
    tracking = start_tracking_op(tracking_uri=tracking_uri, experiment=experiment,
                                 kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, category="cross-domain")
    placement.caching(tracking, enabled=False)
    placement.with_secrets(tracking)
    with dsl.ParallelFor(items=data_uris) as uri:
        data = data_op(data_uri=uri, config_json=config_json, tracking_uri=tracking_uri,
                       parent_run_id=tracking.output).set_display_name("data")
        placement.with_secrets(data)
    merged = merge_datasets_op(datasets=dsl.Collected(data.outputs["dataset"])).set_display_name("merge-categories")
    _model_stages(merged.outputs["merged"], config_json=config_json, model_ref=model_ref,
                  teacher_base_url=teacher_base_url, teacher_model=teacher_model,
                  coldstart_max_steps=coldstart_max_steps, grpo_max_steps=grpo_max_steps,
                  grpo_num_generations=grpo_num_generations, tracking_uri=tracking_uri,
                  parent_run_id=tracking.output, model_name=model_name, model_alias=model_alias)
