"""bench/pipeline.py measures the whole process tree: memory held by a grandchild counts."""
import sys

from conftest import load_bench


def test_peak_memory_includes_grandchildren(tmp_path):
    bench = load_bench("pipeline")
    # parent -> child -> grandchild; only the grandchild allocates (~300 MB, touched so it is resident).
    grandchild = "b = bytearray(300 * 1024 * 1024); import time; time.sleep(1.5)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    cmd = [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"]
    measured = bench.run_measured(cmd, tmp_path / "log.txt", interval=0.1, env={})
    assert measured["exit_code"] == 0
    assert measured["peak_tree_rss"] >= 300 * 1024 * 1024
    assert measured["max_processes"] >= 3


def test_outcome_reads_the_run_summary(tmp_path):
    bench = load_bench("pipeline")
    assert bench.outcome(tmp_path)["summary"] is None
    run = tmp_path / "20260101-000000"
    run.mkdir()
    (run / "summary.json").write_text('{"tracking_uri": "", "reports": ["r.html"], "artifacts": {"a/b": {}}}')
    result = bench.outcome(tmp_path)
    assert result["reports"] == ["r.html"] and result["artifacts"] == 1 and result["registered_models"] == []


def test_timeout_stops_the_whole_tree(tmp_path):
    import psutil

    bench = load_bench("pipeline")
    marker = tmp_path / "grandchild.pid"
    grandchild = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    cmd = [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"]
    measured = bench.run_measured(cmd, tmp_path / "log.txt", interval=0.1, env={}, timeout_s=3)
    assert measured["timed_out"]
    pid = int(marker.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_quality_seeds_and_interval():
    bench = load_bench("quality")
    preset = {"align": {"model": "small-qwen3", "train": {"num_train_epochs": 8}}, "grpo": {"max_steps": 20}}
    cfg = bench.seeded(preset, 2, "S1")
    assert cfg["align"]["model"] == "small-qwen3@2" and cfg["align"]["ablation"] == "S1"
    assert cfg["align"]["train"] == {"num_train_epochs": 8, "seed": 2}
    assert cfg["grpo"] == {"max_steps": 20, "seed": 2} and cfg["baselines"]["sasrec"]["seed"] == 2
    assert preset["align"]["model"] == "small-qwen3"  # the preset itself is untouched
    mean, half = bench.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half - 4.303 * 1.0 / 3 ** 0.5) < 1e-9


def test_serve_bench_runs_at_a_tiny_size(tmp_path):
    """bench/serve.py end to end on the shipped sample with tiny-qwen3: figures and one JSON line."""
    import json
    import subprocess

    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "bench" / "serve.py"), "--tiny", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["catalogue_items"] == 400 and figures["beams"] == 10
    assert 0 < figures["p50_ms_batch1"] <= figures["p99_ms_batch1"]
    assert figures["recs_per_s_batched"] > 0 and figures["recs_per_s_batched_procs"] > 0 and figures["baseline_bare_decoder_p50_ms"] > 0
    assert isinstance(figures["meets_p99"], bool) and isinstance(figures["meets_throughput"], bool)


def test_quality_summary_pairs_thinking_with_direct_and_cold_start():
    """The issue-16 figures per seed: thinking after RL over the aligned model's direct mode, the RL gain over
    cold-start alone, and the self-closed share carried through."""
    bench = load_bench("quality")
    fig = {f: 0.0 for f in bench.FIGURES}

    def run(think, cold, aligned, sasrec):
        return {"model (thinking)": {**fig, "recall@10": think, "self_closed": 0.98},
                "cold-start only (thinking)": {**fig, "recall@10": cold},
                "aligned only (direct)": {**fig, "recall@10": aligned}, "model (direct)": {**fig, "recall@10": aligned},
                "SASRec": {**fig, "recall@10": sasrec}, "best-of-N before RL": {"n1": 0.1, "n2": 0.2}}

    s = bench.summarise([run(0.12, 0.10, 0.11, 0.10), run(0.11, 0.10, 0.10, 0.10)])
    gain = s["ratio_r10_vs_sasrec"]["thinking after RL / cold-start thinking (RL gain)"]
    assert gain["per_seed"] == [1.2, 1.1] and abs(gain["mean_ci"][0] - 1.15) < 1e-9
    assert s["ratio_r10_vs_sasrec"]["thinking after RL / aligned direct"]["per_seed"] == [1.091, 1.1]
    assert s["table"]["model (thinking)"]["self_closed"] == (0.98, 0.0)
    assert s["table"]["best-of-N before RL"]["n2"] == (0.2, 0.0)
    bench.print_summary("t", s)
