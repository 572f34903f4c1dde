"""Where a pipeline step keeps the work a retry must not redo: `<state uri>/<run id>/<step>/`.

A retried or preempted pod starts on empty scratch; what it has paid for (the teacher's answers,
training checkpoints) lives here instead, keyed by the pipeline run (`run_context`) and the step,
so the retry of the same run resumes and a new run starts clean. The location is placement, not
recipe: it comes from the environment (`SIDREASONER_STATE_URI`; on the cluster the platform
ConfigMap's `state-uri`, under the pipeline root bucket), never from the stage config, so it is
no part of KFP's cache key. `s3://bucket/prefix` or a local path (a mounted volume, e.g. a PVC);
both go through `storage`. Without a run id or a state location there is no persistence.
"""
from __future__ import annotations

import logging
import os
import re

from . import storage
from .run_context import pipeline_run_id

log = logging.getLogger(__name__)

STATE_URI_ENV = "SIDREASONER_STATE_URI"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def state_root() -> str | None:
    return os.environ.get(STATE_URI_ENV) or None


def step_state_uri(step: str, what: str) -> str | None:
    """`<state uri>/<run id>/<step>/<what>`, or None when this process keeps no persistent state."""
    root, run = state_root(), pipeline_run_id()
    if not root or not run:
        if root and not run:
            log.info("%s is set but no pipeline run id (%s): %s keeps no persistent state",
                     STATE_URI_ENV, "SIDREASONER_RUN_ID", step)
        return None
    if storage.is_s3(root) and not storage.split_s3(root)[0]:
        raise storage.StorageError(f"{STATE_URI_ENV}={root}: no bucket in the URI (s3://bucket/prefix)")
    return "/".join((root.rstrip("/"), _SAFE.sub("_", run), _SAFE.sub("_", step), what))


def clear(uri: str | None) -> None:
    """Drop a step's state once its artifact is published (a succeeded step is never retried)."""
    if uri:
        try:
            storage.delete_prefix(uri)
        except storage.StorageError as exc:  # only storage is lost; the step's work is done
            log.warning("could not remove the step state %s: %s", uri, exc)
