from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def align_op(dataset: Input[Dataset], sids: Input[Dataset], corpus: Input[Dataset], config_json: str,
             model_ref: str, aligned_model: Output[Model], metrics: Output[Metrics],
             tracking_uri: str = "", parent_run_id: str = ""):
    """Multi-task SID-language alignment SFT (paper §3.2.2): the model with SID tokens + per-task losses
    and GSM8K accuracy before/after. num_gpus > 1 in the config launches accelerate (DeepSpeed)."""
    from sidreasoner_core.align.stage import step

    values = step(config_json, dataset.path, sids.path, corpus.path if corpus else "", aligned_model.path,
                  model_ref=model_ref, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    for name, value in values.items():
        metrics.log_metric(name, value)
