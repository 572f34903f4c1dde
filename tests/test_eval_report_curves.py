"""The evaluation report carries the GRPO curves of the model it scores (issue 16): reward, validation
Recall@10 in thinking mode and reasoning length over the steps."""
from __future__ import annotations

import json

from sidreasoner_core.evaluation import report


def _artifact(tmp_path, rows, cut_last=False):
    (tmp_path / "model").mkdir()
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if cut_last:
        text += '{"step": 9, "rew'  # a record cut by a kill
    (tmp_path / "curves.jsonl").write_text(text)
    return tmp_path / "model"


def test_grpo_curves_table_has_reward_recall_and_length_at_the_eval_steps(tmp_path):
    rows = [{"step": 0, "eval/recall@10": 0.05, "eval/reasoning_tokens": 20.0}]
    rows += [{"step": s, "reward": 0.1 * s, "reasoning/words": 10.0 + s, "reasoning/think_closed_share": 1.0}
             for s in range(1, 5)]
    rows += [{"step": 4, "eval/recall@10": 0.07, "eval/reasoning_tokens": 18.0}]  # same step, second record
    curves, png = report.training_curves(_artifact(tmp_path, rows, cut_last=True))
    assert [r["step"] for r in curves] == [0, 1, 2, 3, 4] and png is None
    head, body = report.curves_table(curves)
    assert head[:3] == ["step", "reward", "valid R@10 (thinking)"]
    assert body[0][:3] == ["0", "", "0.0500"]
    # the reward of the second row is the mean over steps 1-4 (since the previous validation point)
    assert body[1][:4] == ["4", "0.2500", "0.0700", "18.0000"] and body[1][4] == "12.5000"


def test_no_curves_for_a_model_without_grpo(tmp_path):
    model = _artifact(tmp_path, [{"step": 1, "loss": 2.0}])  # cold-start logs losses only
    assert report.training_curves(model) == ([], None)
    assert report.training_curves(tmp_path / "elsewhere" / "model") == ([], None)


def test_report_renders_the_curves_section_and_plot(tmp_path):
    model = _artifact(tmp_path / "m", [{"step": 1, "reward": 0.2, "eval/recall@10": 0.1}]) \
        if (tmp_path / "m").mkdir() is None else None
    (tmp_path / "m" / "curves.png").write_bytes(b"\x89PNG fake")
    curves, png = report.training_curves(model)
    md, page = report.render(tmp_path / "out", "t", {}, {}, [10], [], [], [], [], curves, png)
    assert "## GRPO curves (training)" in md and "grpo_curves.png" in md and "GRPO curves" in page
    assert (tmp_path / "out" / "plots" / "grpo_curves.png").read_bytes() == b"\x89PNG fake"
