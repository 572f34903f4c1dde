"""MLflow model registry: register a model where it already lies and point an alias at it.

The pipeline's packaged model (an MLflow pyfunc directory) is an artifact in object storage; the
version is created with that URI as its source and linked to the run
(`MlflowClient.create_model_version(source=..., run_id=...)`), so the model is stored once, not
uploaded again through the tracking server.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def register_model(tracking_uri: str, run_id: str, model_artifact_uri: str, name: str,
                   alias: str = "champion", description: str = "", tags: dict[str, str] | None = None,
                   wait_s: float = 60.0, upload: bool | None = None, artifact_path: str = "model") -> dict:
    """Register `model_artifact_uri` (an s3://, runs:/, mlflow-artifacts:/ or local path) under `name`.

    Creates the registered model when missing, adds a version whose source is the URI and whose
    run is `run_id`, waits until it is READY and sets `alias` on it. A URI is registered as is.
    Only a path local to this machine (a `kfp.local` run) that a remote tracking server cannot
    read is logged to the run under `artifact_path` and registered as
    `runs:/<run_id>/<artifact_path>` (`upload=None`: only for http(s) servers; True/False forces it). Returns {"name", "version", "alias", "source",
    "run_id", "model_uri", "uploaded"} where model_uri is `models:/<name>@<alias>`.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not tracking_uri:
        raise ValueError("register_model: a tracking URI is required (the registry lives in the tracking store)")
    if not name or "/" in name or ":" in name:
        raise ValueError(f"register_model: invalid model name {name!r} (no '/' or ':')")
    if not _ALIAS.match(alias) or re.fullmatch(r"[vV]\d+|latest", alias):
        raise ValueError(f"register_model: invalid alias {alias!r} (letters, digits, _ or -; not 'latest' or v<N>)")
    if not model_artifact_uri:
        raise ValueError("register_model: model_artifact_uri is empty")

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.get_run(run_id)  # fails early with MLflow's own message when the run does not exist
    source, uploaded = model_artifact_uri, False
    local = Path(model_artifact_uri[len("file://"):] if model_artifact_uri.startswith("file://") else model_artifact_uri)
    is_local = "://" not in model_artifact_uri.replace("file://", "", 1) and ":/" not in model_artifact_uri
    if is_local:
        if not local.exists():
            raise FileNotFoundError(f"register_model: {local} does not exist")
        if upload if upload is not None else tracking_uri.startswith(("http://", "https://")):
            if local.is_dir():
                client.log_artifacts(run_id, str(local), artifact_path=artifact_path)
            else:
                client.log_artifact(run_id, str(local), artifact_path=artifact_path)
            source, uploaded = f"runs:/{run_id}/{artifact_path}", True
            log.warning("register_model: %s is local to this machine and %s cannot read it: uploaded a copy "
                        "to the run (on a cluster the artifact is in object storage and is registered as is)",
                        local, tracking_uri)
        else:
            source = str(local.resolve())
    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags or None,
                                          description=description or None)
    deadline = time.time() + wait_s
    while version.status == "PENDING_REGISTRATION" and time.time() < deadline:
        time.sleep(0.5)
        version = client.get_model_version(name, version.version)
    if version.status != "READY":
        raise RuntimeError(f"model version {name}/{version.version} is {version.status}: {version.status_message}")
    client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s (alias %s) from %s", name, version.version, alias, source)
    return {"name": name, "version": int(version.version), "alias": alias, "source": source,
            "run_id": run_id, "model_uri": f"models:/{name}@{alias}", "uploaded": uploaded}
