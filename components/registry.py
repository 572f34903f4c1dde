"""KFP component: register the pipeline's final model in the MLflow registry under an alias."""
from kfp import dsl
from kfp.dsl import Input, Model

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_model_op(model: Input[Model], tracking_uri: str, parent_run_id: str,
                      name: str = "sidreasoner", alias: str = "champion") -> str:
    """Register `model` as a new version of `name` linked to the pipeline's parent run and point
    `alias` at it; returns `models:/<name>@<alias>` ('' when tracking is off)."""
    from sidreasoner_core.registry import register_model

    if not tracking_uri or not parent_run_id:
        return ""
    # On the cluster the artifact's object-store URI is the durable source; locally it is the path.
    source = model.uri if model.uri.startswith(("s3://", "gs://", "minio://")) else model.path
    return register_model(tracking_uri, parent_run_id, source, name, alias=alias,
                          tags={"kfp.artifact_uri": model.uri})["model_uri"]
