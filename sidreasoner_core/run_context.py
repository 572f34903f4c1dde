"""Which pipeline run this process works for, without the run id being a task parameter.

A parameter is part of KFP's cache key, so a per-run value passed to every task would make every
cache lookup miss. The run id reaches a step as an environment variable instead: on the cluster
the pod spec sets it from the pod's `pipeline/runid` label (downward API), locally the runner sets
it. Everything that needs the run (the MLflow parent run, resumable work in persistent storage)
reads it here.
"""
from __future__ import annotations

import os

RUN_ID_ENV = "SIDREASONER_RUN_ID"


def pipeline_run_id() -> str | None:
    """The KFP run id of this step's pipeline run, or None outside a pipeline run."""
    return os.environ.get(RUN_ID_ENV) or None
