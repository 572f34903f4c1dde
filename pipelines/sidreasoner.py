"""The SIDReasoner DAG: one definition for the cluster and for `kfp.local`."""
from kfp import dsl

from components.data import data_op
from components.tracking import start_tracking_op

PIPELINE_NAME = "sidreasoner"


@dsl.pipeline(name=PIPELINE_NAME, description="SIDReasoner: SIDs -> enrichment -> alignment -> reasoning -> evaluation")
def sidreasoner_pipeline(
    data_uri: str,
    category: str = "",
    config_json: str = "{}",
    tracking_uri: str = "",
    experiment: str = "sidreasoner",
):
    tracking = start_tracking_op(tracking_uri=tracking_uri, experiment=experiment,
                                 kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, category=category)
    tracking.set_caching_options(False)
    data = data_op(data_uri=data_uri, config_json=config_json, category=category,
                   tracking_uri=tracking_uri, parent_run_id=tracking.output)
    data.set_display_name("data")
