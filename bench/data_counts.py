"""Data stage: reproduce the Industrial counts, and time the raw Amazon 2018 reader.

    python bench/data_counts.py [PATH_TO_Industrial_and_Scientific] [--reviews 1000000]

1. Runs the data stage on the processed Industrial_and_Scientific files and checks 3,686 items and
   10,393 / 4,532 / 4,533 samples.
2. Writes a synthetic Amazon 2018 category (~1M reviews + meta, JSON lines shaped like the real dump)
   and times, on the same file: the stage's reviews reader (vectorized pass), its line-by-line pass
   (what it falls back to on a bad line), and a plain `json.loads` loop baseline; then the whole raw
   stage (meta + reviews + dedupe + 5-core + windows + split).
Ends with one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sidreasoner_core.data import amazon_raw  # noqa: E402
from sidreasoner_core.data.config import DataConfig  # noqa: E402
from sidreasoner_core.data.errors import BadLines  # noqa: E402
from sidreasoner_core.data.stage import build  # noqa: E402

EXPECTED = {"items": 3686, "samples": {"train": 10393, "valid": 4532, "test": 4533}}


def synth_2018(root: Path, n_reviews: int, seed: int = 0) -> tuple[Path, Path]:
    """Reviews and meta lines with the real dump's fields (text, style, votes...), not only the three used."""
    rng = random.Random(seed)
    n_users, n_items = max(10, n_reviews // 6), max(10, n_reviews // 25)
    root.mkdir(parents=True, exist_ok=True)
    reviews, meta = root / "Synthetic.json", root / "meta_Synthetic.json"
    words = "good great sturdy cheap works fine broke returned would buy again quality price".split()
    with open(reviews, "w") as f:
        for _ in range(n_reviews):
            u = int(n_users * rng.random() ** 1.5)  # mildly skewed users, long-tailed items
            i = int(n_items * rng.random() ** 3)
            t = 1_450_000_000 + rng.randrange(90_000_000)
            text = " ".join(rng.choices(words, k=rng.randint(5, 30)))
            f.write(json.dumps({"overall": float(rng.randint(1, 5)), "verified": True,
                                "reviewTime": "01 1, 2017", "reviewerID": f"A{u:012d}", "asin": f"B{i:09d}",
                                "style": {"Size:": " Large"}, "reviewerName": f"user {u}", "reviewText": text,
                                "summary": text[:20], "unixReviewTime": t}) + "\n")
    with open(meta, "w") as f:
        for i in range(n_items):
            f.write(json.dumps({"category": ["Industrial & Scientific", "Tools"], "tech1": "",
                                "description": [f"Item {i} " + " ".join(rng.choices(words, k=20))],
                                "fit": "", "title": f"Widget {i}" if i % 50 else "", "also_buy": [],
                                "brand": f"Brand{i % 97}", "feature": [], "rank": "1 in Tools",
                                "main_cat": "Industrial", "price": "$9.99", "asin": f"B{i:09d}"}) + "\n")
    return reviews, meta


def baseline_json_loop(file: Path) -> int:
    users, items, times = [], [], []
    with open(file, "rb") as f:
        for line in f:
            rec = json.loads(line)
            users.append(rec["reviewerID"])
            items.append(rec["asin"])
            times.append(rec["unixReviewTime"])
    return len(users)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?", default=str(REPO.parent / "shared/data/amazon18/Industrial_and_Scientific"))
    ap.add_argument("--reviews", type=int, default=1_000_000)
    args = ap.parse_args()
    res: dict = {}

    (items, samples, stats, _), dt = timed(build, DataConfig(), Path(args.path))
    got = {"items": stats["items"], "samples": stats["samples"]}
    res.update(industrial_items=got["items"], industrial_samples=got["samples"],
               industrial_counts_ok=got == EXPECTED, industrial_stage_s=round(dt, 2))
    print(f"Industrial: {got} (expected {EXPECTED}) in {dt:.2f}s", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="sidr-bench-") as tmp:
        (reviews, _meta), dt = timed(synth_2018, Path(tmp) / "Synthetic", args.reviews)
        size_mb = reviews.stat().st_size / 2**20
        print(f"synthetic: {args.reviews} reviews, {size_mb:.0f} MiB, written in {dt:.1f}s", file=sys.stderr)
        fields = amazon_raw.FORMATS["amazon2018"].reviews

        n_base, t_base = timed(baseline_json_loop, reviews)
        df, t_fast = timed(amazon_raw.read_jsonl, reviews, fields, BadLines(skip=False))
        assert len(df) == n_base == args.reviews
        table, t_slow = timed(amazon_raw._read_slow, reviews, fields, BadLines(skip=False))
        assert len(table[1]) == args.reviews
        (items, samples, stats, _), t_stage = timed(build, DataConfig(), Path(tmp) / "Synthetic")
        res.update(
            synthetic_reviews=args.reviews, synthetic_mib=round(size_mb, 1),
            reader_rows_per_s=round(args.reviews / t_fast), reader_s=round(t_fast, 2),
            baseline_json_loads_rows_per_s=round(args.reviews / t_base), baseline_s=round(t_base, 2),
            speedup_vs_json_loads=round(t_base / t_fast, 2),
            line_by_line_rows_per_s=round(args.reviews / t_slow),
            raw_stage_s=round(t_stage, 2), raw_stage_reviews_per_s=round(args.reviews / t_stage),
            raw_stage_items=stats["items"], raw_stage_samples=sum(stats["samples"].values()),
        )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
