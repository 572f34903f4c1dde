"""Data stage at the scale of a real Amazon 2023 category: wall time and peak memory.

    python bench/data_scale.py [--reviews 5000000] [--dir DIR] [--date-window 2019-01-01:2023-09-30]

A category of the Amazon Reviews 2023 release is millions of reviews in multi-GB `.jsonl.gz` files.
This writes a synthetic one in that format (every field the real files carry: rating, title, text,
images, asin, parent_asin, user_id, timestamp in ms, helpful_vote, verified_purchase; meta with
features, description, details, categories...), with skewed users and items so the 5-core drops
a realistic share, then runs `sidreasoner data` on it in a child process and reports its wall time
and peak resident memory against the targets (<= 5 minutes, <= 4 GB on a 2-core machine).
Baseline in the same run: the time to only decompress the reviews file (the I/O floor).
`--dir` keeps the generated files for another run. Ends with one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 300.0
TARGET_RSS_GB = 4.0
CHUNK = 200_000
WORDS = ("good great sturdy cheap works fine broke returned would buy again quality price solid "
         "light heavy small large perfect poor excellent recommend").split()


def _texts(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(lo, hi))) for _ in range(n)]


def synth_2023(root: Path, n_reviews: int, seed: int = 0) -> tuple[Path, Path]:
    """`Synthetic.jsonl.gz` + `meta_Synthetic.jsonl.gz` shaped like the 2023 release (skewed ids)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, n_reviews // 4), max(10, n_reviews // 12)
    root.mkdir(parents=True, exist_ok=True)
    reviews, meta = root / "Synthetic.jsonl.gz", root / "meta_Synthetic.jsonl.gz"
    texts = _texts(rng, 512, 20, 80)      # review bodies: ~300-500 bytes a line, as in the real files
    titles = _texts(rng, 128, 1, 5)
    t0, span = 1_546_300_800_000, 150_000_000_000  # 2019-01-01 .. ~2023-10 in ms
    with gzip.open(reviews, "wt", compresslevel=1) as f:
        for start in range(0, n_reviews, CHUNK):
            n = min(CHUNK, n_reviews - start)
            users = (n_users * rng.random(n) ** 2.0).astype(np.int64)   # a few heavy reviewers
            items = (n_items * rng.random(n) ** 2.5).astype(np.int64)   # long-tailed items
            ts = t0 + rng.integers(0, span, n)
            text_i, title_i = rng.integers(0, len(texts), n), rng.integers(0, len(titles), n)
            rating, votes, verified = rng.integers(1, 6, n), rng.integers(0, 20, n), rng.random(n) < 0.9
            f.write("".join(
                f'{{"rating": {rating[j]}.0, "title": "{titles[title_i[j]]}", "text": "{texts[text_i[j]]}", '
                f'"images": [], "asin": "B{items[j]:09d}X", "parent_asin": "B{items[j]:09d}", '
                f'"user_id": "AG{users[j]:026d}", "timestamp": {ts[j]}, "helpful_vote": {votes[j]}, '
                f'"verified_purchase": {"true" if verified[j] else "false"}}}\n' for j in range(n)))
    descr = _texts(rng, 256, 10, 40)
    with gzip.open(meta, "wt", compresslevel=1) as f:
        for start in range(0, n_items, CHUNK):
            n = min(CHUNK, n_items - start)
            d_i = rng.integers(0, len(descr), n)
            f.write("".join(json.dumps({
                "main_category": "Industrial & Scientific", "title": f"Widget {i} {titles[i % len(titles)]}",
                "average_rating": 4.2, "rating_number": 10, "features": [descr[d_i[k]][:60]],
                "description": [descr[d_i[k]]], "price": 9.99, "images": [], "videos": [],
                "store": f"Store{i % 997}" if i % 7 else None, "categories": ["Industrial & Scientific", "Tools"],
                "details": {"Brand": f"Brand{i % 97}", "Item Weight": "1 pound"}, "parent_asin": f"B{i:09d}",
                "bought_together": None}) + "\n" for k, i in enumerate(range(start, start + n))))
    return reviews, meta


def decompress_baseline(file: Path) -> float:
    t = time.perf_counter()
    with gzip.open(file, "rb") as f:
        while f.read(8 << 20):
            pass
    return time.perf_counter() - t


def run_stage(input_dir: Path, out: Path, date_window: str | None) -> dict:
    """`sidreasoner data` in a child process: wall time, the child's peak RSS, its exit code."""
    cmd = [sys.executable, "-c", "from sidreasoner_core.cli import app; app()", "data",
           "--input", str(input_dir), "--out", str(out), "--force"]
    if date_window:
        cmd += ["--date-window", date_window]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest child
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    stats = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return {"exit_code": proc.returncode, "wall_s": round(wall, 1), "peak_rss_gb": round(peak_kb / 1024 ** 2, 2),
            "stats": stats}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reviews", type=int, default=5_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the generated category here")
    ap.add_argument("--date-window", default=None, help="FIRST:LAST passed to the stage")
    args = ap.parse_args(argv)

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sidr-scale-")
        base = Path(tmp.name)
    else:
        base = args.dir
    cat = base / f"Synthetic_{args.reviews}"
    reviews = cat / "Synthetic.jsonl.gz"
    t = time.perf_counter()
    if not (reviews.is_file() and (cat / "meta_Synthetic.jsonl.gz").is_file()):
        synth_2023(cat, args.reviews)
    gen_s = time.perf_counter() - t
    size_gb = sum(p.stat().st_size for p in cat.iterdir()) / 1024 ** 3
    print(f"synthetic 2023 category: {args.reviews:,} reviews, {size_gb:.2f} GB gzip, written in {gen_s:.0f} s")

    base_s = decompress_baseline(reviews)
    print(f"baseline: decompressing the reviews file alone takes {base_s:.1f} s")
    res = run_stage(cat, base / "dataset", args.date_window)
    stats = res["stats"]
    ok_wall, ok_rss = res["wall_s"] <= TARGET_WALL_S, res["peak_rss_gb"] <= TARGET_RSS_GB
    print(f"data stage: exit {res['exit_code']}, wall {res['wall_s']} s (target <= {TARGET_WALL_S:.0f} s: "
          f"{'met' if ok_wall else 'MISSED'}), peak RSS {res['peak_rss_gb']} GB (target <= {TARGET_RSS_GB} GB: "
          f"{'met' if ok_rss else 'MISSED'}), {res['wall_s'] / max(base_s, 1e-9):.1f}x the decompress baseline")
    if stats:
        print(f"  users {stats['users']:,}, items {stats['items']:,}, samples {stats['samples']}, "
              f"timestamps {stats.get('timestamps')}")
    figures = {"reviews": args.reviews, "input_gb": round(size_gb, 3), "generate_s": round(gen_s, 1),
               "decompress_baseline_s": round(base_s, 1), "stage_wall_s": res["wall_s"],
               "stage_peak_rss_gb": res["peak_rss_gb"], "target_wall_s": TARGET_WALL_S,
               "target_rss_gb": TARGET_RSS_GB, "wall_met": ok_wall, "rss_met": ok_rss,
               "exit_code": res["exit_code"], "users": stats.get("users"), "items": stats.get("items"),
               "samples": stats.get("samples"), "timestamps": stats.get("timestamps")}
    print(json.dumps(figures))
    if tmp is not None:
        tmp.cleanup()
    return figures


if __name__ == "__main__":
    main()
