"""Cross-domain: merge several categories' dataset artifacts into one (one SID space, paper §4.2.2).

Item and user ids are namespaced by category (`Category:id`) so ids from different
categories never clash; each item keeps its `category`, which tells the domain of a sample
(its target's category) for per-domain evaluation.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..artifacts import Artifact, open_artifact, write_artifact
from .errors import DataError
from ..dataset import (ITEMS_FILE, ITEMS_SCHEMA, KIND, SAMPLES_FILE, SAMPLES_SCHEMA, SPLITS, STATS_FILE,
                     read_items, read_samples, write_table)


def merge(datasets: list[Artifact], out: str | Path) -> Artifact:
    if not datasets:
        raise DataError("merge: no datasets given")
    items, samples, per_category = [], [], {}
    for art in datasets:
        it, sm = read_items(art.path), read_samples(art.path)
        category = str(it["category"].iloc[0])
        if category in per_category:
            raise DataError(f"{art.uri}: category {category!r} given twice")
        ns = lambda i, c=category: f"{c}:{i}"  # noqa: E731
        it = it.assign(item_id=it["item_id"].map(ns))
        sm = sm.assign(user_id=sm["user_id"].map(ns), target=sm["target"].map(ns),
                       history=sm["history"].map(lambda h: [ns(x) for x in h]))
        items.append(it)
        samples.append(sm)
        per_category[category] = art.manifest.get("stats", {})
    items_df, samples_df = pd.concat(items, ignore_index=True), pd.concat(samples, ignore_index=True)
    counts = samples_df["split"].value_counts().to_dict()
    stats = {"format": "merged", "category": "+".join(per_category), "categories": per_category,
             "users": int(samples_df["user_id"].nunique()), "items": int(len(items_df)),
             "samples": {s: int(counts.get(s, 0)) for s in SPLITS}, "dropped": {},
             "reference_sids": 0}
    # Reference SIDs of separate categories live in different SID spaces: they cannot be merged.
    items_df["reference_sid"] = None
    with write_artifact(out, kind=KIND, config={"merge": [a.uri for a in datasets]}, parents=datasets,
                        extra={"stats": stats}) as d:
        write_table(items_df, ITEMS_SCHEMA, d / ITEMS_FILE)
        write_table(samples_df, SAMPLES_SCHEMA, d / SAMPLES_FILE)
        (d / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return open_artifact(out, kind=KIND)


def step(dataset_uris: list[str], out: str) -> dict:
    art = merge([open_artifact(u, kind=KIND) for u in dataset_uris], out)
    stats = art.manifest["stats"]
    return {"items": stats["items"], "users": stats["users"],
            **{f"samples_{k}": v for k, v in stats["samples"].items()}}
