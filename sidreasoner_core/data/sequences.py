"""Interactions -> samples: per-user dedupe, iterative k-core, sliding windows, global time split.

Everything works on integer codes with numpy so that categories with millions of
reviews stay fast; ids are turned back into strings only for the output rows.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .schema import SPLITS

log = logging.getLogger(__name__)


def order_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (user, time, file order): file order breaks same-second ties deterministically."""
    return df.sort_values(["user_id", "ts", "_rec"], kind="stable").reset_index(drop=True)


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each (user, item) pair's first interaction in time; `df` must be ordered."""
    dup = df.duplicated(["user_id", "item_id"], keep="first").to_numpy()
    return df[~dup].reset_index(drop=True), int(dup.sum())


def k_core_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by the iterative k-core: repeat "drop users and items with < k rows" until stable.

    Removing rows only lowers counts, so the loop reaches the unique largest
    subset in which every user and item has >= k rows (the k-core).
    """
    users = np.asarray(users)
    items = np.asarray(items)
    keep = np.ones(len(users), dtype=bool)
    nu = int(users.max()) + 1 if len(users) else 0
    ni = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        uc = np.bincount(users[keep], minlength=nu)
        ic = np.bincount(items[keep], minlength=ni)
        new = keep & (uc[users] >= k) & (ic[items] >= k)
        if new.sum() == keep.sum():
            break
        keep = new
    log.debug("k-core k=%d: %d rounds, %d of %d rows kept", k, rounds, int(keep.sum()), len(keep))
    return keep


def split_bounds(n: int, ratio: tuple[float, ...]) -> tuple[int, int]:
    """End indexes of train and valid in the time-sorted samples (floors of the cumulative ratio)."""
    total = float(sum(ratio))
    cut1 = int(np.floor(n * ratio[0] / total + 1e-9))
    cut2 = int(np.floor(n * (ratio[0] + ratio[1]) / total + 1e-9))
    return cut1, cut2


def windows(df: pd.DataFrame, max_history: int, ratio: tuple[float, float, float],
            source: str = "reviews", per_second: int = 1) -> pd.DataFrame:
    """Sliding-window samples from ordered interactions, split globally by target time.

    Every interaction after a user's first is a target; its history is that
    user's previous <= max_history items, oldest first. Samples are sorted by
    (target time, user id, position) and cut 8:1:1 (by default), so every train
    target is no later than every valid target, and valid no later than test.
    `df` has user_id, item_id, ts (in 1/per_second s; ordering uses it, the output is
    seconds), _rec, ordered by `order_interactions`.
    """
    n = len(df)
    users = df["user_id"].to_numpy()
    ucodes, _ = pd.factorize(users, sort=True)  # string order: the tie-break does not depend on the file
    starts = np.r_[0, np.flatnonzero(ucodes[1:] != ucodes[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    user_start = np.repeat(starts, lengths)
    pos = np.arange(n) - user_start
    idx = np.flatnonzero(pos >= 1)  # the targets
    hist_from = np.maximum(user_start[idx], idx - max_history)
    ts = df["ts"].to_numpy()[idx]
    order = np.lexsort((pos[idx], ucodes[idx], ts))
    idx, hist_from, ts = idx[order], hist_from[order], ts[order]
    item_list = df["item_id"].tolist()
    history = [item_list[a:b] for a, b in zip(hist_from.tolist(), idx.tolist())]
    cut1, cut2 = split_bounds(len(idx), ratio)
    split = np.empty(len(idx), dtype=object)
    split[:cut1], split[cut1:cut2], split[cut2:] = SPLITS
    user_of = users[idx]
    k_of = pos[idx]
    return pd.DataFrame({
        "split": split,
        "user_id": user_of,
        "history": history,
        "target": df["item_id"].to_numpy()[idx],
        "timestamp": (ts // per_second).astype("int64"),
        "_row": [f"{source}: user {u} sample {k}" for u, k in zip(user_of.tolist(), k_of.tolist())],
    })
