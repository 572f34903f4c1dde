"""The baselines stage: dataset -> artifact kind "baselines" (predictions.parquet: the top-k list of
each baseline for every valid/test sample; metrics.json; sasrec.pt; sasrec_history.json).
Most-popular and SASRec (paper §4.1.2), trained on the same split as the model; samples are
identified by their position in the split (`sample`) so the evaluation scores them on exactly
the samples it decoded.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ...artifacts import Artifact, open_artifact, write_artifact
from ...dataset import KIND as DATASET_KIND
from ...dataset import SAMPLES_FILE, read_items, read_samples
from ...metrics import flat, rank_metrics
from ...training.runtime import cpu_threads
from ..config import BaselinesConfig, resolve_device
from ..errors import EvaluationError
from ..score import METRICS_FILE, PREDICTIONS_FILE

KIND = "baselines"
SASREC_FILE, SASREC_HISTORY = "sasrec.pt", "sasrec_history.json"

BASELINE_SCHEMA = pa.schema([("baseline", pa.string()), ("split", pa.string()), ("sample", pa.int64()),
                             ("user_id", pa.string()), ("target", pa.string()), ("ranked", pa.list_(pa.string()))])


def run_baselines(config: BaselinesConfig, dataset: Artifact, out: str | Path, progress: bool = True) -> Artifact:
    with cpu_threads(config.max_threads):
        return _run_baselines(config, dataset, out, progress)


def _run_baselines(config: BaselinesConfig, dataset: Artifact, out: str | Path, progress: bool) -> Artifact:
    import torch

    from . import sasrec
    from .popularity import most_popular

    items = list(read_items(dataset.path)["item_id"])
    splits = {s: read_samples(dataset.path, s) for s in ("train", "valid", "test")}
    if splits["train"].empty:
        raise EvaluationError(f"{dataset.uri}: the train split is empty; baselines need training samples")
    rows, metrics, extra = [], {}, {}

    def add(name: str, ranked_by_split: dict[str, list[list[str]]]) -> None:
        for split, ranked in ranked_by_split.items():
            df = splits[split]
            for i, (u, t, r) in enumerate(zip(df["user_id"], df["target"], ranked)):
                rows.append({"baseline": name, "split": split, "sample": i, "user_id": u, "target": t, "ranked": r})
            metrics[f"{name}/{split}"] = rank_metrics(ranked, list(df["target"]), config.ks)

    if config.popularity:
        top = most_popular(splits["train"], config.top_k, items)
        add("popularity", {s: [top] * len(splits[s]) for s in ("valid", "test")})
    model = None
    if config.sasrec.enabled:
        device = resolve_device(config.device)
        model, idx, history = sasrec.train(config.sasrec, splits["train"], splits["valid"], items, device, progress)
        add("sasrec", {s: sasrec.rank(model, list(splits[s]["history"]), idx, config.sasrec.max_len, config.top_k,
                                      device=device) for s in ("valid", "test")})
        extra = {"best_epoch": history["best_epoch"], "epochs": len(history["epochs"])}
    with write_artifact(out, kind=KIND, config=config, parents=[dataset],
                        extra={"baselines": sorted({r["baseline"] for r in rows}), "sasrec": extra}) as d:
        pq.write_table(pa.Table.from_pylist(rows, schema=BASELINE_SCHEMA), d / PREDICTIONS_FILE)
        (d / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        if model is not None:
            torch.save({"state_dict": model.state_dict(), "items": idx.items,
                        "config": config.sasrec.model_dump()}, d / SASREC_FILE)
            (d / SASREC_HISTORY).write_text(json.dumps(history, indent=2))
    return open_artifact(out, kind=KIND)


def baseline_metrics(art: Artifact) -> dict[str, float]:
    """Flat test metrics of a baselines artifact: `popularity_recall_10`, `sasrec_ndcg_5`, ..."""
    m = json.loads((art.path / METRICS_FILE).read_text())
    out = {}
    for key, values in m.items():
        name, split = key.split("/")
        if split == "test":
            out.update(flat(name, values))
    return out


def step_baselines(config_json: str, dataset_uri: str, out: str, tracking_uri: str = "", parent_run_id: str = "",
                   **overrides) -> dict:
    from ...config import section
    from ...tracking import stage_run

    config = BaselinesConfig.build(section(config_json, "baselines"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    with stage_run("baselines", config, tracking_uri, parent_run_id) as tracker:
        tracker.log_input(dataset, context="training", table=SAMPLES_FILE)
        art = run_baselines(config, dataset, out)
        metrics = baseline_metrics(art)
        tracker.log_metrics(metrics)
        if (art.path / SASREC_HISTORY).exists():
            for e in json.loads((art.path / SASREC_HISTORY).read_text())["epochs"]:
                tracker.log_metrics({"sasrec_loss": e["loss"], "sasrec_valid_ndcg_10": e["valid_ndcg@10"]},
                                    step=e["epoch"])
        tracker.log_output(art, files=(METRICS_FILE, SASREC_HISTORY))
    return metrics
