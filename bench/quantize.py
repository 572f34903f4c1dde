"""Benchmark of the Semantic-ID stage.

1. The whole stage (default config: MiniLM embeddings, RQ-VAE training, collision resolution) on
   Industrial_and_Scientific (3,686 items; the data stage runs first into a temp dir): wall and CPU
   time, and shared SIDs after resolution vs the reference index's.
2. Assignment (RQ-VAE encoder + residual nearest-code search) + collision resolution for synthetic
   embeddings at several catalogue sizes, each size in its own subprocess (time, peak RSS sampled
   during the timed part), against a naive baseline: one full N x K distance matrix per level
   (no chunking) and a per-item Python loop for collisions, on the sizes where it fits.
Ends with one JSON line of the figures.

    .venv/bin/python bench/quantize.py [--sizes 10000,100000,1000000] [--naive-max 100000] [--skip-stage]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INDUSTRIAL = REPO.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"
DIM = 384


class PeakRSS:
    """Samples this process's resident memory every 20 ms while active."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.peak = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic(n: int, seed: int = 0):
    """Clustered unit vectors (2,000 Gaussian clusters): realistic near-duplicates, so collisions occur."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2000, DIM)).astype(np.float32)
    x = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x[s:s + m] = centers[rng.integers(0, 2000, m)] + 0.3 * rng.standard_normal((m, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def naive_assign(model, x):
    """Whole-matrix version: encoder on all rows, one N x K distance matrix per level (torch.cdist)."""
    import torch

    with torch.no_grad():
        r = model.encoder(torch.from_numpy(x))
        codes, last_r = [], None
        for level in range(model.shape.levels):
            book = model.codebooks[level]
            d = torch.cdist(r, book) ** 2
            idx = d.argmin(1)
            if level == model.shape.levels - 1:
                last_r = r.clone()
            codes.append(idx)
            r = r - book[idx]
    return torch.stack(codes, 1).numpy(), last_r


def naive_resolve(codes, last_r, book):
    """Per-item Python loop: keep the closest item per SID, then each displaced item (closest first)
    takes its nearest free code in its prefix. (No overflow handling: those items keep a clash.)"""
    import numpy as np
    import torch

    d = (torch.cdist(last_r, book) ** 2).numpy()
    own = d[np.arange(len(codes)), codes[:, -1]]
    used, groups = set(), {}
    for i, row in enumerate(map(tuple, codes)):
        groups.setdefault(row, []).append(i)
    displaced = []
    for row, members in groups.items():
        members.sort(key=lambda i: own[i])
        used.add(row)
        displaced += members[1:]
    displaced.sort(key=lambda i: own[i])
    out = codes.copy()
    for i in displaced:
        prefix = tuple(codes[i, :-1])
        for c in np.argsort(d[i], kind="stable"):
            if (*prefix, int(c)) not in used:
                used.add((*prefix, int(c)))
                out[i, -1] = c
                break
    return out


def one_size(n: int, naive: bool) -> dict:
    """Runs inside a subprocess: one catalogue size."""
    import numpy as np
    import torch

    from sidreasoner_core.sids.collisions import collision_stats, resolve
    from sidreasoner_core.sids.rqvae import RQVAE, RQVAEShape, sq_dists

    torch.set_num_threads(1)
    x = synthetic(n)
    torch.manual_seed(0)
    model = RQVAE(RQVAEShape(input_dim=DIM))   # default shape; k-means init on a sample stands in for training
    model.init_codebooks(torch.from_numpy(x[np.random.default_rng(1).permutation(n)[:16384]]), 10,
                         torch.Generator().manual_seed(0))
    model.eval()
    book = model.codebooks.detach()[-1]
    out = {"n": n}
    base = PeakRSS()._rss()
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), cpu_seconds()
        codes, last_r, last_d = model.assign(x, chunk=65536)
        t1 = time.perf_counter()
        final, stats = resolve(codes, 256, lambda rows: sq_dists(torch.from_numpy(last_r[rows]), book).numpy(),
                               last_d)
        t2, c2 = time.perf_counter(), cpu_seconds()
    out.update(assign_s=round(t1 - t0, 2), resolve_s=round(t2 - t1, 2), total_s=round(t2 - t0, 2),
               cpu_s=round(c2 - c0, 2), peak_rss_gb=round(mem.peak / 2**30, 3),
               extra_rss_gb=round((mem.peak - base) / 2**30, 3),
               shared_before=collision_stats(codes)["shared_sids"], shared_after=collision_stats(final)["shared_sids"],
               reassigned=stats["reassigned_items"], extra_level_items=stats["extra_level_items"],
               max_levels=stats["max_levels"])
    if naive:
        del final
        base = PeakRSS()._rss()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            ncodes, nlast = naive_assign(model, x)
            t1 = time.perf_counter()
            nfinal = naive_resolve(ncodes, nlast, book)
            t2 = time.perf_counter()
        out.update(naive_assign_s=round(t1 - t0, 2), naive_resolve_s=round(t2 - t1, 2),
                   naive_total_s=round(t2 - t0, 2), naive_peak_rss_gb=round(mem.peak / 2**30, 3),
                   naive_extra_rss_gb=round((mem.peak - base) / 2**30, 3),
                   naive_same_codes=bool((ncodes == codes).all()),
                   naive_shared_after=collision_stats(nfinal)["shared_sids"])
    return out


def whole_stage() -> dict:
    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.data.stage import run as data_run
    from sidreasoner_core.sids.config import SidsConfig
    from sidreasoner_core.sids.stage import run as sids_run

    with tempfile.TemporaryDirectory(prefix="bench-sids-") as tmp:
        ds = data_run(DataConfig(), INDUSTRIAL, Path(tmp) / "dataset")
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), cpu_seconds()
            art = sids_run(SidsConfig(cache_embeddings=False), ds, Path(tmp) / "sids", progress=False)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    m = art.manifest["metrics"]
    return {"items": m["items"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "embed_s": round(m["embed_seconds"], 1), "train_s": round(m["train_seconds"], 1),
            "resolve_s": round(m.get("resolve_seconds", 0.0), 3), "peak_rss_gb": round(mem.peak / 2**30, 2),
            "shared_sids_before": m["shared_sids_before"], "shared_sids_after": m["shared_sids_after"],
            "reference_shared_sids": m.get("reference_shared_sids"), "recon_loss": m["recon_loss"],
            "perplexity": [round(m[f"perplexity_l{i}"], 1) for i in range(3)],
            "code_usage": [round(m[f"code_usage_l{i}"], 3) for i in range(3)],
            "load_avg_1m": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--naive-max", type=int, default=100000, help="largest size the naive baseline runs at")
    ap.add_argument("--skip-stage", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # child process
        print(json.dumps(one_size(args.one, args.naive)))
        return

    result: dict = {"cpu_cores": os.cpu_count()}
    if not args.skip_stage:
        result["industrial"] = whole_stage()
        print("whole stage on Industrial_and_Scientific:", json.dumps(result["industrial"]), file=sys.stderr)
    result["synthetic"] = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--naive"] if n <= args.naive_max else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode:
            raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["child_maxrss_gb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3)
        result["synthetic"].append(row)
        print(f"synthetic {n}:", json.dumps(row), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
