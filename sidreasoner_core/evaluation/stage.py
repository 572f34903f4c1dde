"""The evaluate stage: dataset + sids + model (+ baselines) -> artifact kind "evaluation"
(predictions.parquet, best_of_n.parquet, metrics.json, report.md, report.html, plots/).

`run` reads as its four steps: load (`load`), decode (`decode`), score (`score`), report (`report`).
The baselines stage lives in `baselines/stage.py`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..artifacts import Artifact, open_artifact, write_artifact
from ..dataset import KIND as DATASET_KIND
from ..sid import KIND as SIDS_KIND
from ..training.runtime import cpu_threads
from . import report
from .baselines.stage import KIND as BASELINES_KIND
from .config import EvaluateConfig
from .decode import Decoded, decode, prediction_rows
from .load import EvalData, EvalModel, load_data, load_model
from .score import METRICS_FILE, PREDICTIONS_FILE, Scores, flat_metrics, score

log = logging.getLogger(__name__)

KIND = "evaluation"
BEST_OF_N_FILE = "best_of_n.parquet"
REPORT_MD, REPORT_HTML = "report.md", "report.html"

PREDICTION_SCHEMA = pa.schema([
    ("mode", pa.string()), ("sample", pa.int64()), ("trace", pa.int64()), ("user_id", pa.string()),
    ("target", pa.string()), ("target_sid", pa.string()), ("rank", pa.int64()),
    ("ranked_sids", pa.list_(pa.string())), ("ranked_items", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())), ("reasoning", pa.string()), ("reasoning_tokens", pa.int64()),
    ("forced_close", pa.bool_()),
])


def run(config: EvaluateConfig, dataset: Artifact, sids: Artifact | None, model_uri: str,
        baselines: Artifact | None, out: str | Path, progress: bool = True) -> Artifact:
    import torch

    t0 = time.time()
    with cpu_threads(config.max_threads):
        torch.manual_seed(config.seed)
        data = load_data(config, dataset, sids)
        model = load_model(config, model_uri, data.table)
        decoded = decode(config, data, model, progress)
    scores = score(config, decoded, data.target_sids, set(model.trie.sids), baselines, data.samples)
    return _write(out, config, dataset, sids, baselines, model_uri, data, model, decoded, scores, time.time() - t0)


def _info(config: EvaluateConfig, model_uri: str, data: EvalData, model: EvalModel, decoded: Decoded,
          scores: Scores, wall: float) -> dict[str, str]:
    """The report's run description."""
    n = len(data.samples)
    shared = data.table.shared_items
    thinking = scores.metrics.get("thinking")
    closing = ({"thinking mode": f"the model closed </think> itself in {1 - thinking['forced_close_rate']:.0%} of "
                                 f"traces (forced close {thinking['forced_close_rate']:.0%}); mean "
                                 f"{thinking['reasoning_tokens_mean']:.1f} reasoning tokens"} if thinking else {})
    return {"model": str(model_uri),
            "split": f"{config.split} ({n} samples; direct on {decoded.n_direct if config.direct else 0}, "
                     f"thinking on {decoded.n_think}, best-of-{config.best_of_n} on "
                     f"{min(config.best_of_n_samples, n) if config.best_of_n else 0})",
            "catalogue": f"{len(model.trie.sids)} SIDs over {len(data.table)} items ({shared} items share a SID)",
            "decoding": f"constrained beam search, {config.num_beams} beams, length penalty 0; "
                        f"reasoning <= {config.max_reasoning_tokens} tokens",
            **closing,
            "wall time": f"{wall:.0f} s"}


def _example(row: dict, data: EvalData, num_beams: int, top: int = 5) -> dict:
    """A prediction as a person reads it: items with their titles, and where the target landed."""
    title = data.titles.get
    history = list(data.samples["history"].iloc[row["sample"]])
    return {"mode": row["mode"], "user_id": row["user_id"],
            "history": [(data.table.sid_by_item[h], title(h, "")) for h in history],
            "target": (row["target_sid"], title(row["target"], "")),
            "rank": f"rank {row['rank'] + 1}" if row["rank"] >= 0 else f"not in the top {num_beams}",
            "top": [(sid, title(item, ""), sid == row["target_sid"])
                    for sid, item in zip(row["ranked_sids"][:top], row["ranked_items"][:top])],
            "reasoning": row["reasoning"]}


def pick_examples(rows: list[dict], n: int = 3) -> list[dict]:
    """The report's examples: thinking-mode rows (else direct), the first hit beside the first misses,
    in sample order, so a reader sees both what the model gets right and what it gets wrong."""
    shown = [r for r in rows if r["mode"] == "thinking"] or rows
    hit = [r for r in shown if r["rank"] >= 0][:1]
    rest = [r for r in shown if r["rank"] < 0] + [r for r in shown if r["rank"] >= 0 and r not in hit]
    return sorted(hit + rest[:n - len(hit)], key=lambda r: r["sample"])


def _write(out, config: EvaluateConfig, dataset: Artifact, sids: Artifact | None, baselines: Artifact | None,
           model_uri: str, data: EvalData, model: EvalModel, decoded: Decoded, scores: Scores,
           wall: float) -> Artifact:
    """Evaluation step 4, report: predictions, metrics and the Markdown/HTML report as one artifact."""
    rows, bon_rows = prediction_rows(decoded, data)
    shared = data.table.shared_items
    notes = []
    if shared:
        notes.append(f"{shared} items share a SID with another item; the model is scored at SID level "
                     "(a prediction of the shared SID counts for each of its items).")
    examples = [_example(r, data, config.num_beams) for r in pick_examples(rows)]
    parents = [a for a in (dataset, sids, baselines) if a is not None] + [model.ref]
    with write_artifact(out, kind=KIND, config=config, parents=parents,
                        extra={"model_path": str(model.path), "wall_s": round(wall, 1)}) as d:
        pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), d / PREDICTIONS_FILE)
        if bon_rows:
            pq.write_table(pa.Table.from_pylist(bon_rows, schema=PREDICTION_SCHEMA), d / BEST_OF_N_FILE)
        (d / METRICS_FILE).write_text(json.dumps({**scores.metrics, "best_of_n_curve": scores.best_of_n_curve},
                                                 indent=2))
        curves, curves_png = report.training_curves(model.path)
        md, page = report.render(d, "SIDReasoner evaluation", _info(config, model_uri, data, model, decoded, scores, wall),
                                 scores.tables, config.ks, scores.best_of_n_curve, decoded.reasoning_lengths(),
                                 examples, notes, curves, curves_png)
        (d / REPORT_MD).write_text(md)
        (d / REPORT_HTML).write_text(page)
    return open_artifact(out, kind=KIND)


def step(config_json: str, dataset_uri: str, sids_uri: str, model_uri: str, baselines_uri: str, out: str,
         tracking_uri: str = "", parent_run_id: str = "", **overrides) -> dict:
    """The pipeline step: `evaluate` section of the config; empty `sids_uri`/`baselines_uri` = none."""
    from ..config import section
    from ..tracking import stage_run

    config = EvaluateConfig.build(section(config_json, "evaluate"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    sids = open_artifact(sids_uri, kind=SIDS_KIND) if sids_uri else None
    baselines = open_artifact(baselines_uri, kind=BASELINES_KIND) if baselines_uri else None
    with stage_run("evaluate", config, tracking_uri, parent_run_id) as tracker:
        for art, ctx in ((dataset, "evaluation"), (sids, "catalogue"), (baselines, "baselines")):
            if art is not None:
                tracker.log_input(art, context=ctx)
        art = run(config, dataset, sids, model_uri, baselines, out)
        metrics = flat_metrics(art)
        tracker.log_metrics(metrics)
        curve = json.loads((art.path / METRICS_FILE).read_text()).get("best_of_n_curve", [])
        for n, v in enumerate(curve, 1):
            tracker.log_metrics({"best_of_n_recall_10": v}, step=n)
        plots = tuple(f"plots/{p.name}" for p in sorted((art.path / "plots").glob("*.png")))
        tracker.log_output(art, files=(METRICS_FILE, REPORT_MD, REPORT_HTML) + plots)
    return metrics
