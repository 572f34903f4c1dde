"""Enrichment throughput: the stage's async teacher client vs a sequential loop.

    python bench/enrich.py [--items 96] [--users 32] [--latency 0.2] [--concurrency 32]

A loopback OpenAI-compatible server (in its own process, like a remote teacher) answers every
request after `latency` seconds. The stage enriches items + user samples (2 calls per record) at the given
concurrency; then a sequential loop (the same `openai` SDK, one request at a time) sends the very
same requests, read back from the server's log. Ratio = sequential time / stage time for the same
request set (target >= 20x at concurrency 32, 200 ms). A rerun of the stage, served from the
artifact's response cache, is timed too. Ends with one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest_enrich import ChatServer, Reply, build_sids_artifact, completion, smart_answer  # noqa: E402

from sidreasoner_core.artifacts import open_artifact  # noqa: E402
from sidreasoner_core.data.config import DataConfig  # noqa: E402
from sidreasoner_core.data.stage import run as run_data  # noqa: E402
from sidreasoner_core.enrich.config import EnrichConfig  # noqa: E402
from sidreasoner_core.enrich.stage import run as run_enrich  # noqa: E402


def serve(latency: float, log_path: str, ready) -> None:
    """The teacher stand-in, in a child process; logs every request's messages (JSON lines)."""
    lock = threading.Lock()
    log = open(log_path, "a")

    def respond(messages, n):
        with lock:
            log.write(json.dumps(messages) + "\n")
            log.flush()
        time.sleep(latency)
        return Reply(body=completion(smart_answer(messages)))

    with ChatServer(respond) as server:
        ready.put(server.url)
        threading.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--users", type=int, default=56)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-enrich-"))
    run_data(DataConfig(), REPO / "sample_data" / "Industrial_and_Scientific", tmp / "dataset")
    dataset = open_artifact(tmp / "dataset", kind="dataset")
    sids = build_sids_artifact(dataset, tmp / "sids")

    import multiprocessing as mp

    import openai  # noqa: F401  (imported before timing: the bench measures throughput, not imports)

    ctx = mp.get_context("spawn")
    ready, log_path = ctx.Queue(), tmp / "requests.jsonl"
    proc = ctx.Process(target=serve, args=(args.latency, str(log_path), ready), daemon=True)
    proc.start()
    url = ready.get(timeout=120)

    def logged() -> list:
        return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []

    os.environ["BENCH_KEY"] = "bench"
    try:
        cfg = EnrichConfig(teacher="openai", base_url=url, model="bench", api_key_env="BENCH_KEY",
                           concurrency=args.concurrency, max_items=args.items, max_user_samples=args.users,
                           temperature=0.0, request_timeout_s=60)
        t = time.perf_counter()
        art = run_enrich(cfg, dataset, sids, tmp / "corpus")
        stage_s = time.perf_counter() - t
        stats = art.manifest["stats"]
        requests = logged()
        assert stats["items_failed"] == 0 and stats["users_failed"] == 0, stats

        t = time.perf_counter()
        art = run_enrich(cfg, dataset, sids, tmp / "corpus")  # served from the artifact's cache/
        cached_s = time.perf_counter() - t
        assert len(logged()) == len(requests), "the cached rerun sent requests"

        from openai import OpenAI

        client = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=60)
        t = time.perf_counter()
        for messages in requests:  # the sequential baseline: same SDK, same requests, one at a time
            client.chat.completions.create(model="bench", messages=messages, temperature=0.0, top_p=1.0,
                                           max_tokens=cfg.max_tokens)
        seq_s = time.perf_counter() - t
    finally:
        proc.terminate()

    n = len(requests)
    result = {"requests": n, "records": stats["items_total"] + stats["users_total"], "latency_s": args.latency,
              "concurrency": args.concurrency, "stage_s": round(stage_s, 3), "sequential_s": round(seq_s, 3),
              "stage_req_per_s": round(n / stage_s, 1), "sequential_req_per_s": round(n / seq_s, 2),
              "speedup": round(seq_s / stage_s, 1), "cached_rerun_s": round(cached_s, 3),
              "ideal_speedup": args.concurrency}
    print(f"stage: {n} requests in {stage_s:.2f} s ({n / stage_s:.1f} req/s); sequential: {seq_s:.2f} s "
          f"({n / seq_s:.2f} req/s); speedup {seq_s / stage_s:.1f}x; cached rerun {cached_s:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
