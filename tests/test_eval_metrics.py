"""Metrics on hand-made rankings; the report renders tables and plots."""
from __future__ import annotations

import math

import pytest

from sidreasoner_core.metrics import best_of_n_curve, flat, rank_metrics, target_rank


def test_recall_and_ndcg_on_hand_made_rankings():
    ranked = [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "x"], ["d", "e", "f"]]
    targets = ["a", "a", "x", "a"]
    m = rank_metrics(ranked, targets, ks=(1, 2, 3), valid={"a", "b", "c", "d", "e", "f"})
    assert m["n"] == 4 and m["invalid"] == 1                     # "x" is not in the catalogue
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["recall@3"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert rank_metrics([["a", "a"]], ["b"])["invalid"] == 1       # a repeated entry is invalid
    assert target_rank(["a", "b"], "b") == 1 and target_rank([], "b") == -1
    assert flat("direct", {"recall@10": 0.5, "n": 3}) == {"direct_recall_10": 0.5, "direct_n": 3.0}
    with pytest.raises(ValueError):
        rank_metrics([["a"]], ["a", "b"])


def test_best_of_n_curve():
    # sample 0 hits at trace 2, sample 1 never, sample 2 at trace 1 but rank 12 (> 10: a miss)
    assert best_of_n_curve([[-1, 3, 0], [-1, -1, -1], [12, 4, -1]]) == pytest.approx([0.0, 2 / 3, 2 / 3])
    assert best_of_n_curve([]) == []


def test_report_has_tables_and_inline_plots(tmp_path):
    from sidreasoner_core.evaluation.report import render

    rows = {"model (direct)": {"n": 5, "recall@1": 0.2, "ndcg@1": 0.2, "recall@10": 0.6, "ndcg@10": 0.4},
            "sasrec": {"n": 5, "recall@1": 0.0, "ndcg@1": 0.0, "recall@10": 0.4, "ndcg@10": 0.2}}
    md, page = render(tmp_path, "t", {"model": "m"}, {"main": rows}, [1, 10], [0.2, 0.4], [3, 5, 8],
                      [{"user_id": "u", "target_sid": "<a_1><b_1><c_1>", "rank": 0,
                        "ranked_sids": ["<a_1><b_1><c_1>"], "reasoning": "because"}], ["a note"])
    assert "| model (direct) | 5 | 0 | 0.2000 | 0.2000 | 0.6000 | 0.4000 |" in md
    assert page.count("data:image/png;base64,") == 3 and "&lt;a_1&gt;" in page
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["best_of_n.png", "metrics_vs_k.png",
                                                                      "reasoning_length.png"]
