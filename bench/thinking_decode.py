"""Thinking-mode decoding on a finished `sidreasoner run`: the SID search after the re-encoded trace
text (greedy `generate` + `rank_sids`, the path before session 21) against the search continuing from
the reasoning's KV cache (`greedy_think_then_rank`), each with and without `CPU_MALLOC_ENV`.

glibc reads its malloc settings when a process starts, so each setting runs in its own child process
(the same model, test samples, batches and threads); a child times both paths, checks that they give
the same traces and the same top-10 order, and counts its page faults and kernel time. Ends with one
JSON line.

    .venv/bin/python bench/thinking_decode.py --run runs/<run> [--n 640] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(run: Path, n: int, threads: int) -> dict:
    import torch

    from sidreasoner_core.artifacts import open_artifact
    from sidreasoner_core.decoding.constrained import rank_sids
    from sidreasoner_core.decoding.thinking import generate_reasoning, greedy_think_then_rank
    from sidreasoner_core.evaluation.config import EvaluateConfig
    from sidreasoner_core.evaluation.load import load_data, load_model
    from sidreasoner_core.prompts import ranking_prompts

    root = next(run.glob("pipeline_root/*/"))
    cfg = EvaluateConfig()
    data = load_data(cfg, open_artifact(root / "data-op" / "dataset"), open_artifact(root / "sids-op" / "sids"))
    m = load_model(cfg, str(root / "grpo-op" / "model"), data.table)
    torch.set_num_threads(threads)
    prompts = ranking_prompts(m.tokenizer, data.history_sids[:n], True)
    out = {}

    def timed(name, fn):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = fn()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out.update({f"{name}_s": round(time.perf_counter() - t0, 2), f"{name}_kernel_s": round(r1.ru_stime - r0.ru_stime, 2),
                    f"{name}_page_faults": r1.ru_minflt - r0.ru_minflt})
        return result

    def text_path():
        traces = [t[0] for t in generate_reasoning(m.model, m.tokenizer, prompts, 48, 64, progress=False,
                                                   max_sid_tokens=0)]
        return traces, rank_sids(m.model, m.tokenizer, [t.context for t in traces], m.trie, 10, 32, progress=False)
    traces, ranked = timed("text", text_path)
    cached = timed("cache", lambda: greedy_think_then_rank(m.model, m.tokenizer, prompts, m.trie, 10, 48, 64, 0,
                                                           progress=False))
    out["same_traces"] = sum(a.text == b.text and a.forced == b.forced for a, (b, _) in zip(traces, cached))
    out["same_top10_order"] = sum([s for s, _ in a] == [s for s, _ in b] for a, (_, b) in zip(ranked, cached))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished `sidreasoner run` directory (runs/<timestamp>)")
    ap.add_argument("--n", type=int, default=640, help="test samples (the first N)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="child runs per malloc setting, alternating")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.run), args.n, args.threads)))
        return

    from sidreasoner_core.training.runtime import CPU_MALLOC_ENV

    base = {k: v for k, v in os.environ.items() if k not in CPU_MALLOC_ENV}
    settings = {"glibc_default": base, "cpu_malloc_env": {**base, **CPU_MALLOC_ENV}}
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, env in settings.items():
            proc = subprocess.run([sys.executable, __file__, "--child", "--run", args.run, "--n", str(args.n),
                                   "--threads", str(args.threads)], env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, results[name][-1], flush=True)
    figures = {"n": args.n, "threads": args.threads, "repeats": args.repeats}
    for name, runs in results.items():
        for key in runs[0]:
            figures[f"{name}_{key}"] = min(r[key] for r in runs) if key.endswith("_s") else runs[-1][key]
    base_s = figures["glibc_default_text_s"]
    figures["speedup_cache_vs_text"] = round(base_s / figures["glibc_default_cache_s"], 2)
    figures["speedup_cache_malloc_vs_text"] = round(base_s / figures["cpu_malloc_env_cache_s"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
