from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def enrich_op(dataset: Input[Dataset], sids: Input[Dataset], config_json: str, corpus: Output[Dataset],
              metrics: Output[Metrics], teacher_base_url: str = "", teacher_model: str = "",
              tracking_uri: str = ""):
    """Teacher enrichment (paper §3.2.3): item paragraphs + user reasoning traces -> corpus artifact.

    The teacher's API key is read from the env var named by `enrich.api_key_env` (on the
    cluster: a Kubernetes secret mounted as env by the pipeline); it is never a parameter.
    """
    from sidreasoner_core.enrich.stage import step
    from sidreasoner_core.kfp_metrics import log_metrics

    values = step(config_json, dataset.path, sids.path, corpus.path, tracking_uri, "",
                  base_url=teacher_base_url or None, model=teacher_model or None)
    log_metrics(metrics, values)
