"""Ranking metrics with one target per sample: Recall@K (= HR@K) and NDCG@K = 1/log2(rank+2)."""
from __future__ import annotations

import math
from typing import Sequence

KS = (1, 3, 5, 10)


def target_rank(ranked: Sequence[str], target: str) -> int:
    """0-based rank of `target` in `ranked`, -1 if absent."""
    for i, x in enumerate(ranked):
        if x == target:
            return i
    return -1


def rank_metrics(ranked: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = KS,
                 valid: set | None = None) -> dict[str, float]:
    """Mean Recall@K and NDCG@K over samples, plus `n` and `invalid`.

    `invalid` counts samples whose list holds an entry outside `valid` (the catalogue) or
    a repeated entry; such entries still count as misses.
    """
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    n = len(targets)
    out: dict[str, float] = {"n": float(n), "invalid": 0.0}
    sums = {k: [0.0, 0.0] for k in ks}
    for lst, target in zip(ranked, targets):
        lst = list(lst)
        if len(set(lst)) != len(lst) or (valid is not None and any(x not in valid for x in lst)):
            out["invalid"] += 1
        r = target_rank(lst, target)
        for k in ks:
            if 0 <= r < k:
                sums[k][0] += 1.0
                sums[k][1] += 1.0 / math.log2(r + 2)
    for k in ks:
        out[f"recall@{k}"] = sums[k][0] / n if n else 0.0
        out[f"ndcg@{k}"] = sums[k][1] / n if n else 0.0
    return out


def best_of_n_curve(hit_ranks: Sequence[Sequence[int]], k: int = 10) -> list[float]:
    """Recall@k of the best of the first n traces, n = 1..N (a hit if any trace ranks the target < k).

    `hit_ranks[s][t]` is the target's 0-based rank in trace t of sample s (-1 if absent).
    """
    if not hit_ranks:
        return []
    n_traces = min(len(r) for r in hit_ranks)
    curve = []
    for n in range(1, n_traces + 1):
        hits = sum(any(0 <= r < k for r in ranks[:n]) for ranks in hit_ranks)
        curve.append(hits / len(hit_ranks))
    return curve


def flat(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """MLflow/KFP-safe flat names: `direct_recall_10`, `sasrec_ndcg_5`, `direct_n`."""
    return {f"{prefix}_{k.replace('@', '_')}": float(v) for k, v in metrics.items()}
