"""Serving latency and throughput of the packaged model (the MLflow pyfunc model `mlflow models serve` runs).

The quality preset's backbone (`small-qwen3`, Qwen3 architecture trained from scratch) in direct
mode, constrained beam search with 10 beams over the full Industrial catalogue. No trained model
of that preset is kept on this machine, so the model is `small-qwen3` as the preset builds it
(same architecture, SID tokens added, random weights): latency depends on the architecture,
catalogue and beams, not on the weights. SIDs are made by the sids stage on the full data (the
catalogue trie is the real one), cached under --work.

Figures: p50/p99 milliseconds per request at batch 1 through `PyFuncModel.predict` (what the
scoring server calls), and recommendations (top-10 lists) per second with batched requests; also
the CPU time of the same work (process time, `--threads` 1: what a request costs on an idle core;
wall time on a shared machine also holds the time other processes had the core) and the load.
Baseline in the same run: the bare decoder (`rank_sids` on pre-built prompts) at batch 1, so the
serving layer's overhead shows. Ends with one JSON line.

    .venv/bin/python bench/serve.py                     # full catalogue (first run also builds SIDs, ~2 min)
    .venv/bin/python bench/serve.py --tiny              # shipped sample, tiny-qwen3 (the test's size)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"
SAMPLE = REPO / "sample_data" / "Industrial_and_Scientific"
TARGET_P99_MS, TARGET_RECS_PER_S = 50.0, 200.0


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def prepare(data: Path, model_ref: str, work: Path, sids_epochs: int | None,
            trained: Path | None = None) -> tuple[Path, list[list[str]]]:
    """Dataset, SIDs (sids stage), the model with SID tokens, and the pyfunc model; cached under `work`.
    With `trained` (a packaged model of a pipeline run) that model and its own catalogue are used."""
    from sidreasoner_core.artifacts import ArtifactError, open_artifact
    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.dataset import read_samples
    from sidreasoner_core.data.stage import run as run_data
    from sidreasoner_core.models import add_sid_tokens, load_model
    from sidreasoner_core.serving.config import ServingConfig
    from sidreasoner_core.serving.package import catalogue_rows, save_pyfunc
    from sidreasoner_core.sid import parse_sid, vocabulary
    from sidreasoner_core.sids.config import SidsConfig
    from sidreasoner_core.sids.stage import run as run_sids

    work.mkdir(parents=True, exist_ok=True)

    def cached(path: Path, kind: str, build):
        try:
            return open_artifact(path, kind=kind)
        except ArtifactError:
            t0 = time.time()
            build(path)
            print(f"built {kind} in {time.time() - t0:.0f} s", file=sys.stderr)
            return open_artifact(path, kind=kind)

    dataset = cached(work / "dataset", "dataset", lambda p: run_data(DataConfig(), data, p))
    test = read_samples(dataset.path, "test")
    if trained is not None:
        import pyarrow.parquet as pq

        known = set(pq.read_table(next(trained.rglob("catalogue.parquet")), columns=["item_id"])["item_id"].to_pylist())
        return trained, [list(h) for h in test["history"] if len(h) and set(h) <= known]
    sids_cfg = SidsConfig() if sids_epochs is None else SidsConfig(epochs=sids_epochs)
    sids = cached(work / "sids", "sids", lambda p: run_sids(sids_cfg, dataset, p))
    catalogue = catalogue_rows(dataset, sids)
    pyfunc = work / f"pyfunc-{model_ref}"
    if not (pyfunc / "MLmodel").exists():
        model, tok = load_model(model_ref)
        codes = [parse_sid(r["sid"]) for r in catalogue]
        add_sid_tokens(tok, model, vocabulary(max(map(len, codes)), max(max(c) for c in codes) + 1))
        model_dir = work / f"model-{model_ref}"
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        save_pyfunc(pyfunc, model_dir, catalogue, ServingConfig(num_beams=10, default_k=10))
    known = {r["item_id"] for r in catalogue}
    histories = [list(h) for h in test["history"] if len(h) and set(h) <= known]
    return pyfunc, histories


def _score_share(pyfunc_dir: str, batches: list, start, done) -> None:
    """One serving worker: load the model (one thread), wait for the common start, score its batches."""
    import mlflow.pyfunc
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    model = mlflow.pyfunc.load_model(pyfunc_dir)
    torch.set_num_threads(1)
    model.predict(pd.DataFrame({"history": batches[0]}), params={"k": 10})   # warm-up
    start.wait()
    for b in batches:
        model.predict(pd.DataFrame({"history": b}), params={"k": 10})
    done.put(sum(map(len, batches)))


def multi_process_recs_per_s(pyfunc_dir: Path, batches: list, procs: int) -> float:
    """Recommendations per second with `procs` one-thread workers splitting the batches."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(procs + 1), ctx.Queue()
    workers = [ctx.Process(target=_score_share, args=(str(pyfunc_dir), batches[i::procs], start, done))
               for i in range(procs)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    scored = sum(done.get() for _ in workers)
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    return scored / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="small-qwen3")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "sidreasoner" / "bench-serve"))
    ap.add_argument("--requests", type=int, default=300, help="batch-1 requests timed (after 10 warm-up)")
    ap.add_argument("--batch-size", type=int, default=64, help="histories per batched request")
    ap.add_argument("--batched", type=int, default=1024, help="histories scored in batched requests")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                    help="worker processes of one thread each for the multi-process batched figure "
                         "(the layout of `mlflow models serve --workers N` with serving.max_threads 1)")
    ap.add_argument("--sids-epochs", type=int, default=None, help="RQ-VAE epochs (default: the stage's)")
    ap.add_argument("--pyfunc", default=None,
                    help="a trained packaged model (a run's package-op/served_model) instead of random weights")
    ap.add_argument("--tiny", action="store_true", help="the shipped sample and tiny-qwen3, few requests")
    args = ap.parse_args()
    if args.tiny:
        args.data, args.model, args.requests, args.batched, args.batch_size = str(SAMPLE), "tiny-qwen3", 12, 32, 16
        args.sids_epochs = args.sids_epochs or 5

    import mlflow.pyfunc
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    import hashlib

    data_key = hashlib.sha256(str(Path(args.data).resolve()).encode()).hexdigest()[:8]
    pyfunc_dir, histories = prepare(Path(args.data), args.model, Path(args.work) / data_key, args.sids_epochs,
                                    Path(args.pyfunc) if args.pyfunc else None)
    model = mlflow.pyfunc.load_model(str(pyfunc_dir))
    rec = model.unwrap_python_model().recommender
    torch.set_num_threads(args.threads)   # loading may reset it
    n1 = min(args.requests, len(histories))
    reqs = histories[:n1]

    def timed(fn, items) -> tuple[list[float], list[float]]:
        """Wall and CPU milliseconds per call (CPU time shows what the work costs on a shared machine)."""
        for h in items[:10]:   # warm-up
            fn(h)
        wall, cpu = [], []
        for h in items:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(h)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        return wall, cpu

    def served(h):
        answer = model.predict(pd.DataFrame({"history": [h]}), params={"k": 10})
        assert len(answer["recommendations"].iloc[0]) == 10

    from sidreasoner_core.decoding.constrained import rank_sids
    from sidreasoner_core.prompts import ranking_prompts

    prompts = dict(zip(map(id, reqs), ranking_prompts(rec.tokenizer, [[rec.sid_by_item[i] for i in h] for h in reqs], False)))
    bare, _ = timed(lambda h: rank_sids(rec.model, rec.tokenizer, [prompts[id(h)]], rec.trie, 10, 1, progress=False),
                    reqs)
    lat, lat_cpu = timed(served, reqs)

    nb = min(args.batched, len(histories))
    batches = [histories[s:s + args.batch_size] for s in range(0, nb, args.batch_size)]
    model.predict(pd.DataFrame({"history": batches[0]}), params={"k": 10})   # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        model.predict(pd.DataFrame({"history": b}), params={"k": 10})
    recs_per_s = nb / (time.perf_counter() - t0)
    recs_per_cpu_s = nb / (time.process_time() - c0)
    procs = max(1, min(args.procs, len(batches)))
    recs_per_s_procs = multi_process_recs_per_s(pyfunc_dir, batches, procs)

    figures = {
        "model": args.pyfunc or args.model, "trained_weights": bool(args.pyfunc), "catalogue_items": len(rec), "catalogue_sids": len(rec.trie.sids),
        "sid_levels": rec.trie.levels, "beams": 10, "threads": args.threads, "requests_batch1": n1,
        "p50_ms_batch1": round(percentile(lat, 50), 2), "p99_ms_batch1": round(percentile(lat, 99), 2),
        "baseline_bare_decoder_p50_ms": round(percentile(bare, 50), 2),
        "baseline_bare_decoder_p99_ms": round(percentile(bare, 99), 2),
        "cpu_p50_ms_batch1": round(percentile(lat_cpu, 50), 2), "cpu_p99_ms_batch1": round(percentile(lat_cpu, 99), 2),
        "batch_size": args.batch_size, "histories_batched": nb, "recs_per_s_batched": round(recs_per_s, 1),
        "recs_per_cpu_s_batched": round(recs_per_cpu_s, 1),
        "procs": procs, "recs_per_s_batched_procs": round(recs_per_s_procs, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_cores": os.cpu_count(),
        "target_p99_ms": TARGET_P99_MS, "target_recs_per_s": TARGET_RECS_PER_S,
    }
    figures["meets_p99"] = figures["p99_ms_batch1"] <= TARGET_P99_MS
    figures["meets_throughput"] = max(figures["recs_per_s_batched"], figures["recs_per_s_batched_procs"]) >= TARGET_RECS_PER_S
    print(f"batch 1 through pyfunc: p50 {figures['p50_ms_batch1']} ms, p99 {figures['p99_ms_batch1']} ms "
          f"(target p99 <= {TARGET_P99_MS}); bare decoder p50 {figures['baseline_bare_decoder_p50_ms']} ms, "
          f"p99 {figures['baseline_bare_decoder_p99_ms']} ms", file=sys.stderr)
    print(f"batched ({args.batch_size}/request): {figures['recs_per_s_batched']} recommendations/s "
          f"in one process; {figures['recs_per_s_batched_procs']} with {procs} one-thread worker processes "
          f"(target >= {TARGET_RECS_PER_S})", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
