"""Interactions -> samples: per-user dedupe, iterative k-core, sliding windows, global time split.

Everything works on integer codes with numpy so that categories with millions of
reviews stay fast; ids are turned back into strings only for the output rows.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .schema import SPLITS

log = logging.getLogger(__name__)


def order_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (user id, time, file order): file order breaks same-second ties deterministically.

    Sorts integer codes (user codes in string order) rather than the strings themselves.
    """
    ucodes, _ = pd.factorize(df["user_id"], sort=True)
    order = np.lexsort((df["_rec"].to_numpy(), df["ts"].to_numpy(), ucodes))
    return df.take(order).reset_index(drop=True)


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each (user, item) pair's first interaction in time; `df` must be ordered."""
    ucodes, _ = pd.factorize(df["user_id"])
    icodes, uniq = pd.factorize(df["item_id"])
    pair = ucodes.astype(np.int64) * max(len(uniq), 1) + icodes
    dup = pd.Series(pair).duplicated(keep="first").to_numpy()
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
    ucodes, _ = pd.factorize(df["user_id"], sort=True)  # string order: ties do not depend on the file
    starts = np.r_[0, np.flatnonzero(ucodes[1:] != ucodes[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    user_start = np.repeat(starts, lengths)
    pos = np.arange(n) - user_start
    idx = np.flatnonzero(pos >= 1)  # the targets
    hist_from = np.maximum(user_start[idx], idx - max_history)
    ts = df["ts"].to_numpy()[idx]
    order = np.lexsort((pos[idx], ucodes[idx], ts))
    idx, hist_from, ts = idx[order], hist_from[order], ts[order]
    cut1, cut2 = split_bounds(len(idx), ratio)
    split = np.empty(len(idx), dtype=object)
    split[:cut1], split[cut1:cut2], split[cut2:] = SPLITS
    items = pa.array(df["item_id"].array, type=pa.string())
    users_arr = pa.array(df["user_id"].array, type=pa.string()).take(pa.array(idx))
    return pd.DataFrame({
        "split": split,
        "user_id": _arrow_series(users_arr),
        "history": _arrow_series(_history_lists(items, hist_from, idx)),
        "target": _arrow_series(items.take(pa.array(idx))),
        "timestamp": (ts // per_second).astype("int64"),
        # where a sample came from, for error messages ("Cat.json: user A1 sample 3")
        "_row": pd.Series(pc.binary_join_element_wise(
            f"{source}: user ", users_arr, " sample ", pa.array(pos[idx]).cast(pa.string()), "")).astype(str),
    })


def _arrow_series(arr: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def _history_lists(items: pa.Array, start: np.ndarray, end: np.ndarray) -> pa.ListArray:
    """items[start[j]:end[j]] for every j as one Arrow list array (windows overlap, so values are taken)."""
    lengths = end - start
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), items.take(pa.array(flat))).cast(pa.list_(pa.string()))
