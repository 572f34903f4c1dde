"""MLflow tracking: a parent run per pipeline run, a nested run per stage.

Every stage calls `stage_run(...)`; with no tracking URI it is a no-op, so the
library and its tests run without a server. Secrets never reach params: keys
that look secret are redacted, and API keys only ever live in the environment.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

log = logging.getLogger(__name__)

SECRET_WORDS = ("key", "secret", "token", "password", "credential")
REDACTED = "<redacted>"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        key = prefix[:-1]
        is_secret = any(w in key.lower() for w in SECRET_WORDS) and not key.lower().endswith("_env")
        out[key] = REDACTED if is_secret and obj not in (None, "") else obj
    return out


class Tracker:
    """What a stage uses to log; every method is a no-op when tracking is off."""

    def __init__(self, run=None):
        self.run = run

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str:
        return self.run.info.run_id if self.run else ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run:
            import mlflow

            clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
            mlflow.log_metrics(clean, step=step)

    def log_input(self, artifact, context: str = "input", table: str | None = None) -> None:
        """Record an input artifact (URI + manifest digest) as an MLflow dataset."""
        if not self.run:
            return
        import mlflow
        import pandas as pd

        if table and (artifact.path / table).exists():
            import pyarrow.parquet as pq

            df = pq.read_table(artifact.path / table).to_pandas().head(1000)
            df = df.map(lambda v: str(v) if not isinstance(v, (int, float, str)) else v)
        else:
            df = pd.DataFrame({"file": list(artifact.manifest["files"]), "sha256": list(artifact.manifest["files"].values())})
        ds = mlflow.data.from_pandas(df, source=artifact.uri, name=f"{artifact.kind}:{artifact.manifest['digest'][:12]}",
                                     digest=artifact.manifest["digest"][:32])
        mlflow.log_input(ds, context=context)

    def log_output(self, artifact, files: tuple[str, ...] = ()) -> None:
        """Record an output artifact: its URI and digest as tags, small files as MLflow artifacts."""
        if not self.run:
            return
        import mlflow

        mlflow.set_tags({f"output.{artifact.kind}.uri": artifact.uri,
                         f"output.{artifact.kind}.digest": artifact.manifest["digest"]})
        for name in files:
            path = artifact.path / name
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path=artifact.kind)

    def log_text(self, text: str, name: str) -> None:
        if self.run:
            import mlflow

            mlflow.log_text(text, name)


def start_parent_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the pipeline's parent run and return its id (it stays open for the stages)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, config: Any = None, tracking_uri: str | None = None,
              parent_run_id: str | None = None) -> Iterator[Tracker]:
    """A nested MLflow run for one stage under `parent_run_id` (no-op without a URI)."""
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri:
        yield Tracker(None)
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp_id, tags = None, {"sidreasoner.stage": stage}
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        exp_id = parent.info.experiment_id
        tags["mlflow.parentRunId"] = parent_run_id
        tags.update({k: v for k, v in parent.data.tags.items() if k.startswith("kfp.")})
    run = client.create_run(exp_id or "0", run_name=stage, tags=tags)
    with mlflow.start_run(run_id=run.info.run_id) as active:
        if config is not None:
            params = {k: str(v)[:500] for k, v in flatten(config).items()}
            for chunk in range(0, len(params), 100):
                mlflow.log_params(dict(list(params.items())[chunk:chunk + 100]))
        yield Tracker(active)
