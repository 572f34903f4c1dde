from kfp import dsl
from typing import List

from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def data_op(raw: Input[Dataset], fingerprint: str, config_json: str, dataset: Output[Dataset],
            stats: Output[Metrics], category: str = "", tracking_uri: str = ""):
    """Data stage: raw or processed reviews (`raw`, imported from the run's data_uri) -> items.parquet +
    samples.parquet. `fingerprint` (of the input's listing) is in the cache key only: new data under
    the same URI is never served from cache."""
    from sidreasoner_core.data.stage import step
    from sidreasoner_core.kfp_metrics import log_metrics

    metrics = step(config_json, raw.uri, dataset.path, tracking_uri, "", category=category or None)
    log_metrics(stats, metrics)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_datasets_op(datasets: Input[List[Dataset]], merged: Output[Dataset], stats: Output[Metrics]):
    """Cross-domain: several categories' datasets -> one dataset (one SID space)."""
    from sidreasoner_core.data.merge import step
    from sidreasoner_core.kfp_metrics import log_metrics

    log_metrics(stats, step([d.path for d in datasets], merged.path))
