"""A launched (multi-process) SFT replays its workers' log history to the launching process's
callbacks; the curve callback writes on the main process only, so the replay must say it is one.
(Found by the cluster rehearsal: cold-start with num_gpus > 1 failed after training.)"""
from sidreasoner_core.reasoning.callbacks import CurveLog, curve_callback
from sidreasoner_core.training.sft import replay_logs


def test_worker_history_reaches_the_curve_log(tmp_path):
    curves = CurveLog(tmp_path / "curves.jsonl")
    replay_logs([curve_callback(curves), object()], [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    assert [(r["step"], r["loss"]) for r in curves.rows()] == [(1, 2.0), (2, 1.5)]
