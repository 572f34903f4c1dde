from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def start_tracking_op(tracking_uri: str, experiment: str, kfp_run_id: str, category: str) -> str:
    """Open the MLflow parent run of this pipeline run; returns its id ('' when tracking is off)."""
    from sidreasoner_core.tracking import start_parent_run

    if not tracking_uri:
        return ""
    return start_parent_run(tracking_uri, experiment, run_name=f"sidreasoner-{category}",
                            tags={"kfp.run_id": kfp_run_id, "category": category})

