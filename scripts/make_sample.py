"""Cut the small real sample shipped in the repo from ../shared/data.

A consistent subset of Amazon 2018 Industrial_and_Scientific (processed format):
whole users (all their train/valid/test samples) are taken in a fixed hashed
order until the items they touch reach --max-items; item.json, index.json and
info.txt are cut to exactly those items. Also a small GSM8K slice.

    python scripts/make_sample.py --src ../shared/data --dst sample_data
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
from pathlib import Path

import pandas as pd

CATEGORY = "Industrial_and_Scientific"


def items_of(df: pd.DataFrame) -> set[str]:
    out = set(df["item_id"].astype(str))
    for h in df["history_item_id"]:
        out.update(str(x) for x in ast.literal_eval(h))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="../shared/data")
    ap.add_argument("--dst", default="sample_data")
    ap.add_argument("--max-items", type=int, default=400)
    ap.add_argument("--gsm8k-train", type=int, default=200)
    args = ap.parse_args()
    src = Path(args.src) / "amazon18" / CATEGORY
    dst = Path(args.dst) / CATEGORY
    dst.mkdir(parents=True, exist_ok=True)
    splits = {s: pd.read_csv(src / f"{s}.csv", dtype=str, keep_default_na=False) for s in ("train", "valid", "test")}
    users = sorted(set().union(*(set(df["user_id"]) for df in splits.values())),
                   key=lambda u: hashlib.md5(u.encode()).hexdigest())
    by_user = {s: df.groupby("user_id") for s, df in splits.items()}
    chosen, items = [], set()
    for u in users:
        parts = [g.get_group(u) for g in by_user.values() if u in g.groups]
        new = set().union(*(items_of(p) for p in parts))
        if len(items | new) > args.max_items:
            continue
        chosen.append(u)
        items |= new
    keep = set(chosen)
    for s, df in splits.items():
        df[df["user_id"].isin(keep)].to_csv(dst / f"{s}.csv", index=False)
    meta = json.loads((src / "item.json").read_text())
    index = json.loads((src / "index.json").read_text())
    order = sorted(items, key=int)
    (dst / "item.json").write_text(json.dumps({i: meta[i] for i in order}, indent=1))
    (dst / "index.json").write_text(json.dumps({i: index[i] for i in order}))
    (dst / "info.txt").write_text("".join(f"{''.join(index[i])}\t{meta[i]['title']}\t{i}\n" for i in order))
    # GSM8K lives in the package (every image ships it): the first N train chats as the local mix, the
    # full test set (evaluation takes the first gsm8k_eval_n)
    gsm_src, gsm_dst = Path(args.src) / "general" / "gsm8k", Path(__file__).resolve().parents[1] / "sidreasoner_core" / "resources"
    lines = (gsm_src / "train.jsonl").read_text().splitlines()[:args.gsm8k_train]
    (gsm_dst / "gsm8k_train_sample.jsonl").write_text("\n".join(lines) + "\n")
    counts = {s: int(df["user_id"].isin(keep).sum()) for s, df in splits.items()}
    print(json.dumps({"users": len(chosen), "items": len(items), "samples": counts}))


if __name__ == "__main__":
    main()
