"""Metrics of a KFP step: logged on its `Output[Metrics]` artifact and also written as that
artifact's file (metrics.json content). KFP's UI reads the logged values; the file makes the
artifact exist on disk, which `kfp.local`'s cache requires of every output it serves again (a
Metrics artifact without a file turns every later lookup of its step into a miss)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def log_metrics(artifact, values: dict) -> None:
    """`artifact.log_metric` for each value, then the values as JSON at `artifact.path` (atomically)."""
    for name, value in values.items():
        artifact.log_metric(name, value)
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(artifact.metadata), sort_keys=True, indent=1))
    os.replace(tmp, path)
