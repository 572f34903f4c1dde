from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import CPU_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def baselines_op(dataset: Input[Dataset], config_json: str, baselines: Output[Model], metrics: Output[Metrics],
                 tracking_uri: str = ""):
    """Baselines (paper §4.1): most-popular and SASRec trained on train, early-stopped on valid,
    scored on valid/test with the shared metric code (`sidreasoner_core.metrics`); test metrics to KFP Metrics."""
    from sidreasoner_core.evaluation.baselines.stage import step_baselines
    from sidreasoner_core.kfp_metrics import log_metrics

    values = step_baselines(config_json, dataset.path, baselines.path, tracking_uri)
    log_metrics(metrics, values)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate_op(dataset: Input[Dataset], config_json: str, evaluation: Output[Dataset], metrics: Output[Metrics],
                report: Output[Markdown], report_html: Output[HTML], sids: Input[Dataset] = None,
                model: Input[Model] = None, baselines: Input[Model] = None, model_ref: str = "",
                tracking_uri: str = ""):
    """Evaluation (paper §4.1): constrained full-catalogue beam search (direct and thinking mode),
    Recall/NDCG@K, best-of-N, baselines on the same samples, Markdown/HTML report.
    The model is the `model` artifact, or `model_ref` (any model reference) when given;
    without `sids` the dataset's reference SIDs are used."""
    import shutil

    from sidreasoner_core.evaluation.stage import REPORT_HTML, REPORT_MD, step
    from sidreasoner_core.kfp_metrics import log_metrics

    model_uri = model_ref or (model.path if model is not None else "")
    if not model_uri:
        raise ValueError("evaluate_op needs a `model` artifact or a `model_ref`")
    values = step(config_json, dataset.path, sids.path if sids is not None else "", model_uri,
                  baselines.path if baselines is not None else "", evaluation.path, tracking_uri)
    log_metrics(metrics, values)
    shutil.copyfile(f"{evaluation.path}/{REPORT_MD}", report.path)
    shutil.copyfile(f"{evaluation.path}/{REPORT_HTML}", report_html.path)
