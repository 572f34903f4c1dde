"""MLflow tracking: a parent run per pipeline run, a nested run per stage.

Every stage calls `stage_run(...)`; with no tracking URI it is a no-op, so the
library and its tests run without a server. Secrets never reach params: keys
that look secret are redacted, and API keys only ever live in the environment.
"""
from __future__ import annotations

import contextlib
import datetime
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


PIPELINE_ROLE_TAG = "sidreasoner.role"  # "pipeline" on the parent run of a pipeline run
KFP_RUN_TAG = "kfp.run_id"
FAILED_TASKS_TAG = "sidreasoner.failed_tasks"


def parent_run_name(category: str, when: datetime.datetime | None = None) -> str:
    """`<category>-<YYYY-MM-DD>`: what the MLflow runs list shows for a pipeline run."""
    day = (when or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    return f"{category or 'all'}-{day}"


def find_parent_run(tracking_uri: str, kfp_run_id: str):
    """The parent run opened for pipeline run `kfp_run_id` (by its tags), or None."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments or not kfp_run_id:
        return None
    found = client.search_runs(experiments, max_results=2, filter_string=(
        f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}' and tags.`{PIPELINE_ROLE_TAG}` = 'pipeline'"))
    return found[0] if found else None


def resolve_parent_run_id(tracking_uri: str, parent_run_id: str = "") -> str:
    """`parent_run_id` when given, else the parent run of this process's pipeline run (the run id
    comes from the environment, `run_context`, never from a task parameter: that would break caching).
    Inside a pipeline run the parent must exist: start-tracking opens it before any stage."""
    from .run_context import RUN_ID_ENV, pipeline_run_id

    if parent_run_id or not tracking_uri:
        return parent_run_id
    kfp_run_id = pipeline_run_id()
    if not kfp_run_id:
        return ""
    parent = find_parent_run(tracking_uri, kfp_run_id)
    if parent is None:
        raise RuntimeError(f"{tracking_uri}: no MLflow parent run tagged {KFP_RUN_TAG}={kfp_run_id} "
                           f"(from {RUN_ID_ENV}); the start-tracking step opens it before every stage")
    return parent.info.run_id


def start_parent_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the pipeline's parent run and return its id (it stays open for the stages). A retry of
    the step finds the run it opened before (same `kfp.run_id`) instead of opening a second one."""
    import mlflow

    tags = {**(tags or {}), PIPELINE_ROLE_TAG: "pipeline"}
    if tags.get(KFP_RUN_TAG):
        existing = find_parent_run(tracking_uri, tags[KFP_RUN_TAG])
        if existing is not None:
            return existing.info.run_id
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    return run.info.run_id


def log_input_listing(tracking_uri: str, run_id: str, uri: str, entries: list[dict], digest: str,
                      name: str, context: str = "input") -> None:
    """Record a pipeline input on a run as an MLflow dataset (the runs list's Dataset column): its
    listing (file, size, version) as the table, the fingerprint as the digest, the URI as source."""
    import mlflow
    import pandas as pd

    ds = mlflow.data.from_pandas(pd.DataFrame(entries), source=str(uri), name=name, digest=digest[-32:])
    mlflow.MlflowClient(tracking_uri=tracking_uri).log_inputs(
        run_id, datasets=[mlflow.entities.DatasetInput(ds._to_mlflow_entity(),
                                                       tags=[mlflow.entities.InputTag("mlflow.data.context", context)])])


def start_pipeline_tracking(tracking_uri: str, experiment: str, category: str, data_uris: list[str],
                            params: dict | None = None) -> str:
    """Open (or, on a retry, find) the parent run of this process's pipeline run, named
    `<category>-<date>`, and record each input as an MLflow dataset built from its listing, with
    the input's fingerprint as digest. Returns the parent run id."""
    import mlflow

    from .fingerprint import digest, listing
    from .run_context import RUN_ID_ENV, pipeline_run_id

    kfp_run_id = pipeline_run_id()
    if not kfp_run_id:
        raise RuntimeError(f"{RUN_ID_ENV} is not set: the pipeline sets it on every step (the runner locally)")
    run_id = start_parent_run(tracking_uri, experiment, run_name=parent_run_name(category),
                              tags={KFP_RUN_TAG: kfp_run_id, "category": category})
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    logged = client.get_run(run_id).data.params
    for key, value in (params or {}).items():
        if key not in logged:  # a retried step finds them already there
            client.log_param(run_id, key, value)
    for uri in data_uris:
        entries = listing(uri)
        fp = digest(entries)
        log_input_listing(tracking_uri, run_id, uri, entries, fp, name=f"{category or 'input'}:{fp[:12]}")
    return run_id


def finish_parent_run(tracking_uri: str, kfp_run_id: str, state: str, error_message: str = "") -> dict | None:
    """Close the parent run of pipeline run `kfp_run_id` after the pipeline ended in `state`
    (KFP's SUCCEEDED / FAILED / CANCELLED). On failure the run is marked FAILED (KILLED when
    cancelled) and names the failed stage(s): the nested runs that ended FAILED or were left
    RUNNING by a killed pod (those are closed too). Returns what was set, or None without a parent."""
    import mlflow

    parent = find_parent_run(tracking_uri, kfp_run_id)
    if parent is None:
        return None
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    pid = parent.info.run_id
    stages = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")
    failed = sorted(r.data.tags.get("sidreasoner.stage", r.info.run_name) for r in stages
                    if r.info.status in ("FAILED", "RUNNING", "SCHEDULED"))
    if state == "SUCCEEDED":
        status = "FINISHED"
        failed = []
    else:
        status = "KILLED" if state == "CANCELLED" else "FAILED"
        for r in stages:
            if r.info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(r.info.run_id, status)
        client.set_tag(pid, FAILED_TASKS_TAG, ", ".join(failed) or "unknown (no stage run failed)")
        if error_message:
            client.set_tag(pid, "kfp.error", error_message[:5000])
    client.set_tag(pid, "kfp.state", state)
    if parent.info.status in ("RUNNING", "SCHEDULED") or status != "FINISHED":
        client.set_terminated(pid, status)
    return {"run_id": pid, "status": status, "failed_tasks": failed}


@contextlib.contextmanager
def stage_run(stage: str, config: Any = None, tracking_uri: str | None = None,
              parent_run_id: str | None = None) -> Iterator[Tracker]:
    """A nested MLflow run for one stage under `parent_run_id` (no-op without a URI); without one,
    under the parent run of this process's pipeline run (`resolve_parent_run_id`)."""
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri:
        yield Tracker(None)
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    parent_run_id = resolve_parent_run_id(tracking_uri, parent_run_id or "")
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
