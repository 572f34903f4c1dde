from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def align_op(dataset: Input[Dataset], sids: Input[Dataset], corpus: Input[Dataset], config_json: str,
             base_model: Input[Model], aligned_model: Output[Model], metrics: Output[Metrics],
             max_steps: int = 0, tracking_uri: str = ""):
    """Multi-task SID-language alignment SFT (paper §3.2.2): the model with SID tokens + per-task losses
    and GSM8K accuracy before/after. num_gpus > 1 in the config launches accelerate (DeepSpeed).
    `base_model` is the imported base model (its URI is the model reference)."""
    from sidreasoner_core.align.stage import step
    from sidreasoner_core.kfp_metrics import log_metrics
    from sidreasoner_core.lineage import model_ref
    from sidreasoner_core.run_config import check_stage_gpus

    check_stage_gpus(config_json, "align")
    values = step(config_json, dataset.path, sids.path, corpus.path if corpus else "", aligned_model.path,
                  model_ref=model_ref(base_model.uri), tracking_uri=tracking_uri,
                  max_steps=max_steps or None)
    log_metrics(metrics, values)
