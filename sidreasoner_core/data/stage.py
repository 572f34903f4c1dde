"""Data stage entry point: `run(config, input_path, out)`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..artifacts import Artifact, open_artifact, write_artifact
from . import processed_csv
from .config import DataConfig
from .errors import BadLines, DataError
from ..dataset import (ITEMS_FILE, ITEMS_SCHEMA, KIND, QUARANTINE_FILE, SAMPLES_FILE, SAMPLES_SCHEMA,
                     SPLITS, STATS_FILE, write_table)

log = logging.getLogger(__name__)


def detect_format(path: Path) -> str:
    if processed_csv.looks_like(path):
        return "csv"
    from . import amazon_raw

    fmt = amazon_raw.detect(path)
    if fmt:
        return fmt
    raise DataError(f"{path}: cannot detect the input format (expected train/valid/test.csv + item.json, "
                    "or Amazon reviews + meta JSON lines); name it with --format")


def _check_ids(items: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Every history and target id must be in the item table; the error names the first bad row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    known = pa.array(items["item_id"].astype(str).tolist(), type=pa.string())
    h = samples["history"]
    hist = (pa.array(h.array) if isinstance(h.dtype, pd.ArrowDtype)  # raw readers build Arrow lists
            else pa.array(h.tolist(), type=pa.list_(pa.string())))
    flat_ok = pc.is_in(pc.list_flatten(hist), value_set=known).to_numpy(zero_copy_only=False)
    if not flat_ok.all():
        parent = pc.list_parent_indices(hist).to_numpy()
        pos = int(np.flatnonzero(~flat_ok)[0])
        row = int(parent[pos])
        unknown = pc.list_flatten(hist)[pos].as_py()
        raise DataError(f"{samples['_row'].iloc[row]}: history item id {unknown!r} is not in the item table")
    tgt_ok = samples["target"].isin(items["item_id"]).to_numpy()
    if not tgt_ok.all():
        row = int(np.flatnonzero(~tgt_ok)[0])
        raise DataError(f"{samples['_row'].iloc[row]}: target item id {samples['target'].iloc[row]!r} "
                        "is not in the item table")


def build(config: DataConfig, input_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, BadLines]:
    """Read and process the input; returns (items, samples, stats, bad-line log)."""
    path = Path(input_path)
    if not path.exists():
        raise DataError(f"{path}: input does not exist")
    fmt = config.format if config.format != "auto" else detect_format(path)
    category = config.category or path.name
    bad = BadLines(skip=config.skip_bad_lines)
    dropped: dict[str, int] = {}
    if fmt == "csv":
        missing = [f for f in ("item.json", *(f"{s}.csv" for s in SPLITS)) if not (path / f).is_file()]
        if missing:
            raise DataError(f"{path}: not a processed-CSV directory, missing {missing}")
        items = processed_csv.read_items(path, category)
        samples = processed_csv.read_samples(path, config.max_history, bad)
    else:
        from . import amazon_raw

        items, samples, dropped = amazon_raw.build(path, fmt, config, category, bad)
    if samples.empty:
        skipped = sum(bad.counts.values())
        raise DataError(f"{path}: no samples left after skipping {skipped} bad line(s)" if skipped
                        else f"{path}: no samples (the input files hold no rows)")
    dup = items["item_id"].duplicated()
    if dup.any():
        raise DataError(f"{path}: item id {items['item_id'][dup].iloc[0]!r} appears twice in the item table")
    _check_ids(items, samples)
    counts = samples["split"].value_counts().to_dict()
    stats = {
        "format": fmt,
        "category": category,
        "users": int(samples["user_id"].nunique()),
        "items": int(len(items)),
        "samples": {s: int(counts.get(s, 0)) for s in SPLITS},
        "dropped": {**dropped, **{f"bad_line:{k}": v for k, v in bad.counts.items()}},
        "reference_sids": int(items["reference_sid"].notna().sum()),
    }
    return items, samples, stats, bad


def run(config: DataConfig, input_path: str | Path, out: str | Path) -> Artifact:
    items, samples, stats, bad = build(config, input_path)
    with write_artifact(out, kind=KIND, config=config, parents=[{"uri": str(input_path), "kind": "raw"}],
                        extra={"stats": stats}) as d:
        write_table(items, ITEMS_SCHEMA, d / ITEMS_FILE)
        write_table(samples, SAMPLES_SCHEMA, d / SAMPLES_FILE)
        (d / STATS_FILE).write_text(json.dumps(stats, indent=2))
        bad.write_quarantine(d / QUARANTINE_FILE)
    log.info("data stage: %s", json.dumps(stats))
    return open_artifact(out, kind=KIND)


def step(config_json: str, data_uri: str, out: str, tracking_uri: str = "", parent_run_id: str = "",
         **overrides) -> dict:
    """The pipeline step: config from the pipeline config's `data` section, tracked in MLflow."""
    from ..config import section
    from ..storage import download_prefix, is_s3
    from ..tracking import stage_run

    config = DataConfig.build(section(config_json, "data"), source="config_json", **overrides)
    local_input = Path(data_uri)
    if is_s3(data_uri):
        import tempfile

        local_input = Path(tempfile.mkdtemp(prefix="sidr-data-")) / Path(data_uri.rstrip("/")).name
        download_prefix(data_uri, local_input)
    with stage_run("data", config, tracking_uri, parent_run_id) as tracker:
        art = run(config, local_input, out)
        stats = art.manifest["stats"]
        metrics = {"users": stats["users"], "items": stats["items"],
                   **{f"samples_{k}": v for k, v in stats["samples"].items()},
                   **{f"dropped_{k}": v for k, v in stats["dropped"].items()}}
        tracker.log_metrics(metrics)
        tracker.log_output(art, files=("stats.json",))
    return metrics
