"""Raw Amazon files written by the data tests (both formats, plain or gzip)."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

REVIEW_KEYS = {"amazon2018": ("reviewerID", "asin", "unixReviewTime"),
               "amazon2023": ("user_id", "parent_asin", "timestamp")}


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def meta_record(fmt: str, item: str, title: str | None) -> dict:
    if fmt == "amazon2018":
        rec = {"asin": item, "description": [f"About {item}.", "Sturdy."], "brand": f"Brand{item[-1]}",
               "category": ["Industrial & Scientific", "Tools"], "imageURL": [], "rank": "1 in Tools"}
    else:
        rec = {"parent_asin": item, "description": [f"About {item}."], "features": ["Sturdy"],
               "store": "", "details": {"Brand": f"Brand{item[-1]}", "Weight": "1 kg"},
               "categories": ["Industrial & Scientific", "Tools"], "main_category": "Industrial", "images": []}
    if title is not None:
        rec["title"] = title
    return rec


def review_record(fmt: str, user: str, item: str, ts_s: int) -> dict:
    u, i, t = REVIEW_KEYS[fmt]
    extra = {"overall": 5.0, "verified": True, "style": {"Size:": " 1"}} if fmt == "amazon2018" else \
        {"rating": 5.0, "title": "ok", "text": "fine", "images": []}
    return {u: user, i: item, t: ts_s * (1000 if fmt == "amazon2023" else 1), **extra}


def random_interactions(n_users: int, n_items: int, seed: int, lo: int = 1, hi: int = 12) -> list[tuple[str, str, int]]:
    """(user, item, ts seconds) with skewed item popularity, repeats and same-second ties."""
    rng = random.Random(seed)
    items = [f"B{j:05d}" for j in range(n_items)]
    weights = [1.0 / (1 + j) ** 0.7 for j in range(n_items)]
    out = []
    for u in range(n_users):
        t = 1_500_000_000 + rng.randrange(10_000_000)
        for _ in range(rng.randint(lo, hi)):
            t += rng.choice([0, 0, 86400, 3600 * rng.randint(1, 500)])
            out.append((f"U{u:04d}", rng.choices(items, weights)[0], t))
    rng.shuffle(out)  # file order is not time order
    return out


def make_raw(root: Path, fmt: str, *, gz: bool = False, n_users: int = 80, n_items: int = 40, seed: int = 0,
             no_title: tuple[str, ...] = (), no_meta: tuple[str, ...] = (),
             names: tuple[str, str] | None = None) -> tuple[Path, list[tuple[str, str, int]]]:
    """A category directory with one reviews and one meta file; returns (dir, interactions)."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".json" if fmt == "amazon2018" else ".jsonl"
    suffix = ".gz" if gz else ""
    rname, mname = names or (f"{root.name}{ext}{suffix}", f"meta_{root.name}{ext}{suffix}")
    inter = random_interactions(n_users, n_items, seed)
    items = sorted({i for _, i, _ in inter})
    meta = [json.dumps(meta_record(fmt, i, None if i in no_title else f"Widget {i} & Co")) for i in items
            if i not in no_meta]
    write_lines(root / mname, meta)
    write_lines(root / rname, [json.dumps(review_record(fmt, u, i, t)) for u, i, t in inter])
    return root, inter
