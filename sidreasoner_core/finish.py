"""The pipeline's last step: headline metrics onto the parent run, the final model registered
with an alias, and the parent run closed."""
from __future__ import annotations

from pathlib import Path

from .artifacts import open_artifact
from .evaluation.score import flat_metrics


def finish_step(tracking_uri: str, parent_run_id: str, model_uri: str, evaluation_uri: str,
                model_name: str = "sidreasoner", alias: str = "candidate") -> dict:
    """Returns the headline metrics (and the registered version when tracking is on)."""
    evaluation = open_artifact(evaluation_uri)
    model = open_artifact(model_uri, kind="model")
    headline = flat_metrics(evaluation)
    if not (tracking_uri and parent_run_id):
        return headline
    import mlflow

    from .registry import register_model

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for key, value in headline.items():
        client.log_metric(parent_run_id, key, float(value))
    client.set_tag(parent_run_id, "output.model.uri", model.uri)
    client.set_tag(parent_run_id, "output.evaluation.uri", evaluation.uri)
    registered = register_model(tracking_uri, parent_run_id, str(Path(model.path) / "model"), model_name,
                                alias=alias, tags={"digest": model.manifest["digest"]})
    client.set_terminated(parent_run_id, "FINISHED")
    return {**headline, "registered_version": registered["version"]}

