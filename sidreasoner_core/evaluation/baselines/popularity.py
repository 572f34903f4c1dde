"""Most-popular baseline: every user gets the items with the most train interactions."""
from __future__ import annotations

from collections import Counter

import pandas as pd


def item_counts(train: pd.DataFrame) -> Counter:
    """Interactions per item in the train split, each counted once: every sample's target plus
    the history of each user's earliest train sample (those earlier items are nobody's target)."""
    counts = Counter(train["target"])
    first = train.sort_values(["timestamp"], kind="stable").drop_duplicates("user_id", keep="first") \
        if train["timestamp"].notna().all() else train.drop_duplicates("user_id", keep="first")
    for hist in first["history"]:
        counts.update(hist)
    return counts


def most_popular(train: pd.DataFrame, top_k: int = 10, catalogue: list[str] | None = None) -> list[str]:
    """The top-k items by train count; ties by item id so the list is deterministic."""
    counts = item_counts(train)
    items = catalogue if catalogue is not None else list(counts)
    return sorted(items, key=lambda i: (-counts.get(i, 0), i))[:top_k]
