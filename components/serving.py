from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import CPU_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def package_op(model: Input[Model], dataset: Input[Dataset], sids: Input[Dataset], config_json: str,
               served_model: Output[Model]):
    """The served model: an MLflow pyfunc model directory (model, SID catalogue, item table) written
    as this step's artifact, which the promotion gate registers where it lies."""
    from sidreasoner_core.serving.package import step

    values = step(config_json, model.path, dataset.path, sids.path, served_model.path)
    served_model.metadata.update(values)


# The trainer image (CUDA torch): the gate ranks on a GPU whatever it cannot take from earlier measurements.
@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def promote_op(served_model: Input[Model], dataset: Input[Dataset], evaluation: Input[Dataset],
               baselines: Input[Model], config_json: str, metrics: Output[Metrics], decision: Output[Markdown],
               tracking_uri: str, model_name: str = "sidreasoner", alias: str = "candidate"):
    """Promotion gate: candidate vs the current champion (and SASRec) on the same split; registers the
    candidate from its artifact URI and moves `champion` only on a win by the configured margin."""
    from sidreasoner_core.promotion import step
    from sidreasoner_core.tracking import resolve_parent_run_id

    parent_run_id = resolve_parent_run_id(tracking_uri)  # from the run id in the env, not a parameter
    result = step(config_json, served_model.uri, served_model.path, dataset.path, evaluation.path, baselines.path,
                  tracking_uri, parent_run_id, model_name, alias)
    with open(decision.path, "w") as f:
        f.write(result.markdown())
    metrics.log_metric("promoted", float(result.promote))
    for who, values in (("candidate", result.candidate), ("champion", result.champion), ("sasrec", result.sasrec)):
        for key, value in (values or {}).items():
            if "@" in key:
                metrics.log_metric(f"{who}_{key.replace('@', '_')}", float(value))
