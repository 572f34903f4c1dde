from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def start_tracking_op(tracking_uri: str, experiment: str, kfp_run_id: str, category: str) -> str:
    """Open the MLflow parent run of this pipeline run; returns its id ('' when tracking is off)."""
    from sidreasoner_core.tracking import start_parent_run

    if not tracking_uri:
        return ""
    return start_parent_run(tracking_uri, experiment, run_name=f"sidreasoner-{category}",
                            tags={"kfp.run_id": kfp_run_id, "category": category})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def finish_op(model: Input[Model], evaluation: Input[Dataset], metrics: Output[Metrics], tracking_uri: str,
              parent_run_id: str, model_name: str = "sidreasoner", alias: str = "candidate"):
    """Register the final model under `model_name@alias`, headline metrics on the parent run."""
    from sidreasoner_core.finish import finish_step

    for name, value in finish_step(tracking_uri, parent_run_id, model.path, evaluation.path,
                                   model_name, alias).items():
        metrics.log_metric(name, value)
