"""Interactions -> samples: per-user dedupe, iterative k-core, sliding windows, global time split.

Everything works on integer codes with numpy so that categories with millions of
reviews stay fast; ids are turned back into strings only for the output rows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..dataset import SPLITS

log = logging.getLogger(__name__)


@dataclass
class Interactions:
    """One row per review: user/item codes into `user_ids`/`item_ids`, time, record order in the file.

    User codes follow the ids' string order, so sorting by code is sorting by id.
    """

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    rec: np.ndarray
    user_ids: pa.Array
    item_ids: pa.Array

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "Interactions":
        """From columns user_id, item_id, ts, _rec."""
        u, uids = pd.factorize(df["user_id"], sort=True)
        i, iids = pd.factorize(df["item_id"])
        return cls(u.astype(np.int64), i.astype(np.int64), df["ts"].to_numpy(np.int64), df["_rec"].to_numpy(np.int64),
                   pa.array(uids.astype(str).array, type=pa.string()), pa.array(iids.astype(str).array, type=pa.string()))

    def __len__(self) -> int:
        return len(self.users)

    def select(self, rows: np.ndarray) -> "Interactions":
        """Rows by boolean mask or index array (ids tables are shared)."""
        return Interactions(self.users[rows], self.items[rows], self.ts[rows], self.rec[rows],
                            self.user_ids, self.item_ids)

    def n_users(self) -> int:
        return int(np.count_nonzero(np.bincount(self.users))) if len(self) else 0

    def n_items(self) -> int:
        return int(np.count_nonzero(np.bincount(self.items))) if len(self) else 0

    def item_id_list(self) -> pa.Array:
        """The ids of the items present."""
        present = np.flatnonzero(np.bincount(self.items)) if len(self) else np.zeros(0, np.int64)
        return self.item_ids.take(pa.array(present))


def order(x: Interactions) -> Interactions:
    """Sort by (user id, time, file order): file order breaks same-second ties deterministically."""
    return x.select(np.lexsort((x.rec, x.ts, x.users)))


def dedupe(x: Interactions) -> tuple[Interactions, int]:
    """Keep each (user, item) pair's first interaction in time; `x` must be ordered."""
    pair = x.users * (int(x.items.max()) + 1 if len(x) else 1) + x.items
    dup = pd.Series(pair).duplicated(keep="first").to_numpy()
    return x.select(~dup), int(dup.sum())


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


def windows(x: Interactions, max_history: int, ratio: tuple[float, float, float],
            source: str = "reviews", per_second: int = 1) -> pd.DataFrame:
    """Sliding-window samples from ordered interactions, split globally by target time.

    Every interaction after a user's first is a target; its history is that
    user's previous <= max_history items, oldest first. Samples are sorted by
    (target time, user id, position) and cut 8:1:1 (by default), so every train
    target is no later than every valid target, and valid no later than test.
    `x` is ordered by `order`; its ts are in 1/per_second s (ordering uses them,
    the output is seconds).
    """
    n = len(x)
    starts = np.r_[0, np.flatnonzero(x.users[1:] != x.users[:-1]) + 1] if n else np.zeros(0, np.int64)
    user_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    pos = np.arange(n) - user_start
    idx = np.flatnonzero(pos >= 1)  # the targets
    by_time = np.lexsort((pos[idx], x.users[idx], x.ts[idx]))
    idx = idx[by_time]
    hist_from = np.maximum(user_start[idx], idx - max_history)
    cut1, cut2 = split_bounds(len(idx), ratio)
    split = np.empty(len(idx), dtype=object)
    split[:cut1], split[cut1:cut2], split[cut2:] = SPLITS
    item_of_row = x.item_ids.take(pa.array(x.items))
    users = x.user_ids.take(pa.array(x.users[idx]))
    return pd.DataFrame({
        "split": split,
        "user_id": _arrow_series(users),
        "history": _arrow_series(_history_lists(item_of_row, hist_from, idx)),
        "target": _arrow_series(item_of_row.take(pa.array(idx))),
        "timestamp": (x.ts[idx] // per_second).astype("int64"),
        # where a sample came from, for error messages ("Cat.json: user A1 sample 3")
        "_row": pd.Series(pc.binary_join_element_wise(
            f"{source}: user ", users, " sample ", pa.array(pos[idx]).cast(pa.string()), "")).astype(str),
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
