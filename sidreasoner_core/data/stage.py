"""Data stage entry point: `run(config, input_path, out)`."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from .. import storage
from ..artifacts import Artifact, check_output, clean_leftovers, open_artifact, temp_name, write_artifact
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
    if fmt == "csv" and config.date_window is not None:
        raise DataError(f"{path}: date_window needs raw reviews with timestamps; the processed CSV has none")
    timestamps = None
    if fmt == "csv":
        missing = [f for f in ("item.json", *(f"{s}.csv" for s in SPLITS)) if not (path / f).is_file()]
        if missing:
            raise DataError(f"{path}: not a processed-CSV directory, missing {missing}")
        items, removed = processed_csv.read_items(path, category, bad, dropped, config.min_title_chars)
        samples = processed_csv.clean_samples(processed_csv.read_samples(path, config.max_history, bad),
                                              removed, dropped)
    else:
        from . import amazon_raw

        items, samples, dropped, timestamps = amazon_raw.build(path, fmt, config, category, bad)
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
        "timestamps": timestamps,  # unit found, the format's unit, first/last day, date window
    }
    return items, samples, stats, bad


@contextlib.contextmanager
def local_input(input_uri: str) -> Iterator[Path]:
    """The input as a local directory: `s3://bucket/prefix/Cat` is downloaded to a temp `.../Cat`
    (its name stays the category), removed afterwards."""
    if not storage.is_s3(input_uri):
        yield Path(input_uri)
        return
    scratch = Path(tempfile.gettempdir())
    clean_leftovers(scratch, "sidr-data-in")  # downloads of killed runs
    tmp = scratch / temp_name("sidr-data-in")
    tmp.mkdir()
    try:
        local = tmp / (Path(input_uri.rstrip("/")).name or "input")
        local.mkdir()
        if not storage.download_prefix(input_uri, local):
            raise DataError(f"{input_uri}: no objects under this prefix")
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(config: DataConfig, input_path: str | Path, out: str | Path) -> Artifact:
    input_uri = str(input_path)
    check_output(out, KIND, [input_uri])  # before reading a multi-GB dump, not after
    with local_input(input_uri) as path:
        items, samples, stats, bad = build(config, path)
    with write_artifact(out, kind=KIND, config=config, parents=[{"uri": input_uri, "kind": "raw"}],
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
    from ..tracking import stage_run

    config = DataConfig.build(section(config_json, "data"), source="config_json", **overrides)
    with stage_run("data", config, tracking_uri, parent_run_id) as tracker:
        art = run(config, data_uri, out)
        stats = art.manifest["stats"]
        metrics = {"users": stats["users"], "items": stats["items"],
                   **{f"samples_{k}": v for k, v in stats["samples"].items()},
                   **{f"dropped_{k}": v for k, v in stats["dropped"].items()}}
        tracker.log_metrics(metrics)
        tracker.log_output(art, files=("stats.json",))
    return metrics
