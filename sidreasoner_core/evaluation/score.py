"""Evaluation step 3, score: Recall/NDCG@K of every mode and baseline on the same samples
(paper §4.1.1), the best-of-N curve (paper Figure 4), and the report's tables."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.parquet as pq

from ..artifacts import Artifact
from ..metrics import best_of_n_curve, flat, rank_metrics, target_rank
from .config import EvaluateConfig
from .decode import Decoded
from .errors import EvaluationError

PREDICTIONS_FILE = "predictions.parquet"   # in both the evaluation and the baselines artifacts
METRICS_FILE = "metrics.json"


@dataclass
class Scores:
    metrics: dict[str, dict] = field(default_factory=dict)   # mode or baseline -> metrics (metrics.json)
    tables: dict[str, dict[str, dict]] = field(default_factory=lambda: {"main": {}, "thinking_subset": {}})
    best_of_n_curve: list[float] = field(default_factory=list)


def _sids(ranked) -> list[list[str]]:
    return [[s for s, _ in r] for r in ranked]


def score(config: EvaluateConfig, decoded: Decoded, target_sids: list[str], valid_sids: set[str],
          baselines: Artifact | None, samples: pd.DataFrame) -> Scores:
    """Metrics and report tables. The main table is on the direct-mode samples (thinking's when
    direct is off); a thinking-subset table compares on thinking's samples when they are fewer."""
    ks, n_direct, n_think = config.ks, decoded.n_direct, decoded.n_think
    out = Scores()
    main, subset = out.tables["main"], out.tables["thinking_subset"]
    if decoded.direct is not None:
        main["model (direct)"] = out.metrics["direct"] = rank_metrics(
            _sids(decoded.direct), target_sids[:n_direct], ks, valid_sids)
    if decoded.thinking is not None:
        traces = [t for t, _ in decoded.thinking]
        m = rank_metrics(_sids(r for _, r in decoded.thinking), target_sids[:n_think], ks, valid_sids)
        m["reasoning_tokens_mean"] = sum(t.tokens for t in traces) / len(traces)
        m["forced_close_rate"] = sum(t.forced for t in traces) / len(traces)
        subset["model (thinking)"] = out.metrics["thinking"] = m
        if decoded.direct is not None and n_think <= n_direct:
            subset["model (direct)"] = rank_metrics(_sids(decoded.direct[:n_think]), target_sids[:n_think], ks,
                                                    valid_sids)
        if n_think == n_direct or not config.direct:
            main["model (thinking)"] = m
    if decoded.best_of_n:
        ranks: dict[int, list[int]] = {}
        for i, _, _, r in decoded.best_of_n:   # every sampled trace's rank of the target, per sample
            ranks.setdefault(i, []).append(target_rank([s for s, _ in r], target_sids[i]))
        out.best_of_n_curve = best_of_n_curve([ranks[i] for i in sorted(ranks)], k=min(10, config.num_beams))
        out.metrics["best_of_n"] = {f"recall@10_n{n + 1}": v for n, v in enumerate(out.best_of_n_curve)}
    if baselines is not None:
        n_main = n_direct if config.direct else n_think
        for name, (m_main, m_think) in score_baselines(baselines, samples, config.split, n_main, n_think, ks).items():
            out.metrics[name] = main[name] = m_main
            if m_think is not None and n_think:
                subset[name] = m_think
    if len(subset) <= 1 or n_think == n_direct:
        out.tables.pop("thinking_subset")
    return out


def score_baselines(art: Artifact, samples: pd.DataFrame, split: str, n_direct: int, n_think: int, ks):
    """Each baseline's metrics on the first n_direct (and n_think) samples, checked sample by sample."""
    df = pq.read_table(art.path / PREDICTIONS_FILE).to_pandas()
    df = df[df["split"] == split]
    out = {}
    for name, g in df.groupby("baseline", sort=True):
        g = g.set_index("sample").sort_index()
        if len(g) != len(samples) or list(g["user_id"]) != list(samples["user_id"]) or \
                list(g["target"]) != list(samples["target"]):
            raise EvaluationError(f"{art.uri}/{PREDICTIONS_FILE}: baseline {name!r} was scored on other "
                                  f"{split} samples than this dataset's (built from another dataset?)")
        ranked = [list(r) for r in g["ranked"]]
        tgt = list(g["target"])
        n = n_direct or len(samples)
        main = rank_metrics(ranked[:n], tgt[:n], ks)
        think = rank_metrics(ranked[:n_think], tgt[:n_think], ks) if n_think else None
        out[name] = (main, think)
    return out


def flat_metrics(art: Artifact) -> dict[str, float]:
    """An evaluation artifact's metrics as flat MLflow names (`direct_recall_10`, ...), with its wall time."""
    m = json.loads((art.path / METRICS_FILE).read_text())
    out = {}
    for key, values in m.items():
        if key == "best_of_n_curve":
            continue
        out.update(flat(key, values))
    out["wall_s"] = float(art.manifest.get("wall_s", 0))
    return out
