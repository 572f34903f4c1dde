"""Benchmark the README's main job: `sidreasoner run` (default preset, shipped sample) end to end.

Measures wall time and the peak memory of the whole process tree (the CLI, the kfp.local
subprocesses of every step and anything they start), polled with psutil, and checks the budget:
<= 15 min wall and <= 8 GB peak on this 2-core machine. Baseline in the same run: the start-up of
`sidreasoner --help` (what every step pays to import the package). Prints a few human lines, then
ONE line that is a JSON object of the figures.

    .venv/bin/python bench/pipeline.py [--config default] [--data DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
WALL_LIMIT_S = 15 * 60
MEM_LIMIT_GB = 8.0
GB = 1024 ** 3


def sidreasoner_cmd() -> list[str]:
    script = Path(sys.executable).with_name("sidreasoner")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sidreasoner_core.cli import app; app()"]


def tree_rss(proc: psutil.Process) -> tuple[int, int, int]:
    """(sum of RSS over the tree, largest single RSS, number of processes) — 0s if it is gone."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0, 0
    total = biggest = 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest, len(procs)


def stop_tree(proc: psutil.Process) -> None:
    """End the run we started and every process under it (kfp.local step subprocesses)."""
    try:
        procs = proc.children(recursive=True) + [proc]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


class _Stopped(Exception):
    pass


def _raise_stopped(signum, frame):
    raise _Stopped(signum)


def run_measured(cmd: list[str], log_path: Path, interval: float, env: dict, timeout_s: float | None = None) -> dict:
    started = time.perf_counter()
    timed_out = False
    previous = signal.signal(signal.SIGTERM, _raise_stopped)  # `timeout`/CI cancel: take the tree down too
    try:
        with open(log_path, "wb") as log:
            child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            proc = psutil.Process(child.pid)
            peak_total = peak_single = max_procs = 0
            try:
                while child.poll() is None:
                    total, biggest, count = tree_rss(proc)
                    peak_total, peak_single = max(peak_total, total), max(peak_single, biggest)
                    max_procs = max(max_procs, count)
                    if timeout_s and time.perf_counter() - started > timeout_s:
                        timed_out = True
                        stop_tree(proc)
                        break
                    time.sleep(interval)
            except (KeyboardInterrupt, _Stopped):
                stop_tree(proc)
                raise
            child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - started
    # The kernel's own high-water mark of the largest waited-for descendant (catches spikes between polls).
    kernel_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"exit_code": child.returncode, "wall_s": wall, "peak_tree_rss": max(peak_total, kernel_peak),
            "peak_single_rss": max(peak_single, kernel_peak), "max_processes": max_procs, "timed_out": timed_out}


def startup_baseline(env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(sidreasoner_cmd() + ["--help"], cwd=REPO, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def outcome(out_dir: Path) -> dict:
    """What the run left: its summary, reports and registered models (read after timing stops)."""
    summaries = sorted(out_dir.glob("*/summary.json"))
    if not summaries:
        return {"summary": None, "reports": [], "registered_models": [], "artifacts": 0}
    summary = json.loads(summaries[-1].read_text())
    models = []
    uri = summary.get("tracking_uri") or ""
    if uri:
        try:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            for rm in client.search_registered_models():
                models.append({"name": rm.name, "aliases": sorted(getattr(rm, "aliases", {}) or {})})
        except Exception as exc:  # a store without a registry is a finding, not a crash
            models.append({"error": str(exc)[:200]})
    return {"summary": str(summaries[-1]), "reports": summary.get("reports", []),
            "registered_models": models, "artifacts": len(summary.get("artifacts", {}))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="preset name or config YAML (default: default)")
    ap.add_argument("--data", default=None, help="input data (default: the shipped sample)")
    ap.add_argument("--out", default=None, help="run directory parent (default: a temp dir, removed)")
    ap.add_argument("--interval", type=float, default=0.5, help="memory poll interval, seconds")
    ap.add_argument("--timeout", type=float, default=2 * WALL_LIMIT_S,
                    help="stop the run (and its process tree) after this many seconds (default: 2x the budget)")
    args = ap.parse_args(argv)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    keep = args.out is not None
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-pipeline-")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = sidreasoner_cmd() + ["run", "--config", args.config, "--out", str(out_dir)]
    if args.data:
        cmd += ["--data", args.data]

    baseline = startup_baseline(env)
    print(f"baseline: `sidreasoner --help` starts in {baseline:.1f} s", flush=True)
    print(f"running: {' '.join(cmd)}  (log: {out_dir / 'bench.log'})", flush=True)
    measured = run_measured(cmd, out_dir / "bench.log", args.interval, env, timeout_s=args.timeout)
    result = outcome(out_dir)
    wall, peak_gb = measured["wall_s"], measured["peak_tree_rss"] / GB
    wall_ok, mem_ok = wall <= WALL_LIMIT_S, peak_gb <= MEM_LIMIT_GB
    if measured["timed_out"]:
        print(f"STOPPED after {args.timeout:.0f} s (--timeout)")
    elif measured["exit_code"] != 0:
        print(f"FAILED: exit code {measured['exit_code']}; last lines of the log:")
        print("\n".join((out_dir / "bench.log").read_text(errors="replace").splitlines()[-20:]))
    print(f"wall: {wall / 60:.1f} min  (<= {WALL_LIMIT_S // 60} min: {'yes' if wall_ok else 'NO'})")
    print(f"peak memory (process tree RSS): {peak_gb:.2f} GB  (<= {MEM_LIMIT_GB:.0f} GB: {'yes' if mem_ok else 'NO'}); "
          f"largest single process {measured['peak_single_rss'] / GB:.2f} GB, up to {measured['max_processes']} processes")
    print(f"reports: {len(result['reports'])}; registered models: {result['registered_models'] or 'none'}")
    figures = {
        "bench": "pipeline", "config": args.config, "exit_code": measured["exit_code"],
        "timed_out": measured["timed_out"],
        "wall_s": round(wall, 1), "wall_limit_s": WALL_LIMIT_S, "wall_ok": wall_ok,
        "peak_rss_gb": round(peak_gb, 3), "peak_single_rss_gb": round(measured["peak_single_rss"] / GB, 3),
        "mem_limit_gb": MEM_LIMIT_GB, "mem_ok": mem_ok, "max_processes": measured["max_processes"],
        "baseline_startup_s": round(baseline, 2), "cpu_count": os.cpu_count(),
        "artifacts": result["artifacts"], "reports": len(result["reports"]),
        "registered_models": [m.get("name") for m in result["registered_models"] if "name" in m],
        "has_report": bool(result["reports"]), "has_registered_model": any("name" in m for m in result["registered_models"]),
        "ok": measured["exit_code"] == 0 and not measured["timed_out"] and wall_ok and mem_ok,
    }
    if not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
