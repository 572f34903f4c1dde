"""Light steps around the stages: the run's config, the input's fingerprint, the MLflow parent run.

None of them is cached: the first two are recomputed every run so that a changed preset or new
data under the same prefix changes the cache keys of the stages that take their outputs (those
outputs depend on content only, never on the run); the MLflow steps act on the run itself.
The pipeline run id reaches them as an env var (`sidreasoner_core.run_context`), not a parameter.
"""
from typing import NamedTuple

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_config_op(preset: str, config_json: str, train_gpus: int, model_ref: str
                      ) -> NamedTuple("RunConfig", [("config_json", str), ("model_uri", str)]):
    """The run's config: `preset` + the `config_json` override, `train_gpus` in every training
    section, validated whole (a typo fails here, in seconds); and the base model's URI."""
    import json
    from collections import namedtuple

    from sidreasoner_core.lineage import model_uri
    from sidreasoner_core.run_config import base_model, resolve

    config = resolve(preset, config_json, train_gpus)
    out = namedtuple("RunConfig", ["config_json", "model_uri"])
    return out(json.dumps(config, sort_keys=True), model_uri(model_ref or base_model(config)))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fingerprint_op(data_uri: str) -> str:
    """A digest of the input's listing (names, sizes, ETags or mtimes): the data step's cache key."""
    from sidreasoner_core.fingerprint import fingerprint

    return fingerprint(data_uri)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def start_tracking_op(tracking_uri: str, experiment: str, category: str, preset: str, train_gpus: int,
                      gpu_type: str, data_uri: str = "", data_uris: list = []):
    """Open the MLflow parent run of this pipeline run, named `<category>-<date>`, with the input
    recorded as its dataset (the runs list's Dataset column) and the run's hardware as params."""
    from sidreasoner_core.tracking import start_pipeline_tracking

    if tracking_uri:
        start_pipeline_tracking(tracking_uri, experiment, category, [data_uri] if data_uri else list(data_uris),
                                params={"preset": preset, "train_gpus": int(train_gpus), "gpu_type": gpu_type})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def finish_tracking_op(tracking_uri: str, status: dsl.PipelineTaskFinalStatus):
    """Exit handler: close the parent run FINISHED, or FAILED naming the failed stage(s)."""
    from sidreasoner_core.run_context import pipeline_run_id
    from sidreasoner_core.tracking import finish_parent_run

    if tracking_uri and pipeline_run_id():
        print(finish_parent_run(tracking_uri, pipeline_run_id(), status.state, status.error_message or ""))
