from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def sids_op(dataset: Input[Dataset], config_json: str, sids: Output[Dataset], metrics: Output[Metrics],
            tracking_uri: str = ""):
    """Semantic IDs: item texts -> embeddings -> RQ-VAE -> collision-free SIDs (or the dataset's index)."""
    from sidreasoner_core.sids.stage import step
    from sidreasoner_core.kfp_metrics import log_metrics

    values = step(config_json, dataset.path, sids.path, tracking_uri)
    log_metrics(metrics, values)
