"""Baselines: SASRec learns a planted pattern; most-popular counts train interactions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval_helpers import one_thread  # noqa: F401 (fixture)
from sidreasoner_core.evaluation.baselines import sasrec
from sidreasoner_core.evaluation.baselines.popularity import item_counts, most_popular
from sidreasoner_core.evaluation.config import SASRecConfig
from sidreasoner_core.metrics import rank_metrics


def _planted(n: int, n_items: int, rng) -> pd.DataFrame:
    """Histories of consecutive items i, i+1, ... (mod n_items); the target is the next one."""
    rows = []
    for u in range(n):
        start, length = rng.integers(n_items), rng.integers(1, 6)
        seq = [f"i{(start + k) % n_items}" for k in range(length + 1)]
        rows.append({"user_id": f"u{u}", "history": seq[:-1], "target": seq[-1], "timestamp": u})
    return pd.DataFrame(rows)


@pytest.mark.usefixtures("one_thread")
def test_sasrec_learns_next_item_pattern():
    rng = np.random.default_rng(0)
    n_items = 30
    items = [f"i{k}" for k in range(n_items)]
    train, valid, test = _planted(600, n_items, rng), _planted(60, n_items, rng), _planted(100, n_items, rng)
    cfg = SASRecConfig(hidden=32, blocks=1, dropout=0.1, lr=5e-3, max_epochs=25, patience=5, batch_size=64, max_len=5)
    model, idx, hist = sasrec.train(cfg, train, valid, items, progress=False)
    ranked = sasrec.rank(model, list(test["history"]), idx, cfg.max_len, top_k=10)
    m = rank_metrics(ranked, list(test["target"]), ks=(1, 10))
    assert m["recall@1"] > 0.9, m
    assert hist["best_valid_ndcg@10"] > 0.9 and hist["epochs"][0]["loss"] > hist["epochs"][-1]["loss"]
    # the BCE variant trains too (it is weaker; only check it beats chance by far)
    cfg_bce = cfg.model_copy(update={"loss": "bce", "max_epochs": 25})
    model, idx, _ = sasrec.train(cfg_bce, train, valid, items, progress=False)
    m = rank_metrics(sasrec.rank(model, list(test["history"]), idx, 5), list(test["target"]), ks=(10,))
    assert m["recall@10"] > 0.6, m


def test_most_popular_counts_each_train_interaction_once():
    train = pd.DataFrame([
        {"user_id": "u1", "history": ["a"], "target": "b", "timestamp": 1},
        {"user_id": "u1", "history": ["a", "b"], "target": "c", "timestamp": 2},
        {"user_id": "u2", "history": ["c"], "target": "c", "timestamp": 3},
        {"user_id": "u3", "history": ["d"], "target": "c", "timestamp": 4},
    ])
    counts = item_counts(train)
    assert counts == {"a": 1, "b": 1, "c": 4, "d": 1}
    assert most_popular(train, 3, ["a", "b", "c", "d", "e"]) == ["c", "a", "b"]
