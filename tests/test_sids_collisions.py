"""Collision resolution: distinct SIDs always, the greedy matches a brute-force greedy, overflow gets
extra levels only where needed, and impossible code spaces are refused."""
from __future__ import annotations

import numpy as np
import pytest

from sidreasoner_core.sid import Catalogue, format_sid
from sidreasoner_core.sids.collisions import check_distinct, collision_stats, resolve
from sidreasoner_core.sids.errors import SidsError


def _sids(codes: np.ndarray) -> list[str]:
    return [format_sid(row[row >= 0]) for row in codes]


def _brute_force_greedy(codes: np.ndarray, k: int, cost: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The specification, in plain Python: per shared SID keep the closest item; then over all
    (displaced item, free code in its prefix) pairs in ascending cost, take a pair when both are free."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(map(tuple, codes)):
        groups.setdefault(row, []).append(i)
    used = set(groups)  # (prefix..., code) held by keepers
    displaced = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda i: (own[i], i))
        displaced += rows[1:]
    pairs = sorted((cost[i, c], i, c) for i in displaced for c in range(k))
    out = codes.copy()
    done = set()
    for _, i, c in pairs:
        key = (*codes[i, :-1], c)
        if i in done or key in used:
            continue
        out[i, -1] = c
        used.add(key)
        done.add(i)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 8
    rows = []
    for a in range(6):
        for b in range(5):      # each prefix holds 1..k items (within capacity) on random last codes
            for _ in range(rng.integers(1, k + 1)):
                rows.append((a, b, rng.integers(0, 3)))  # few distinct last codes: many collisions
    codes = np.array(rows, dtype=np.int64)
    cost = rng.random((len(codes), k)).astype(np.float32)
    own = cost[np.arange(len(codes)), codes[:, -1]]
    assert collision_stats(codes)["shared_sids"] > 10
    got, stats = resolve(codes, k, lambda rows: cost[rows], own)
    assert got.shape == codes.shape  # no extra level
    np.testing.assert_array_equal(got, _brute_force_greedy(codes, k, cost, own))
    assert collision_stats(got)["shared_sids"] == 0
    assert (got[:, :-1] == codes[:, :-1]).all()           # only the last level moves
    assert stats["reassigned_items"] == int((got[:, -1] != codes[:, -1]).sum())


def test_no_collisions_is_identity():
    codes = np.array([[0, 1, 2], [0, 1, 3], [1, 1, 2]])
    got, stats = resolve(codes, 4, lambda rows: np.zeros((len(rows), 4)))
    np.testing.assert_array_equal(got, codes)
    assert stats["reassigned_items"] == 0 and stats["max_levels"] == 3


def test_identical_items_overflow_gets_extra_levels_only_where_needed():
    k = 16
    same = np.zeros((1000, 3), dtype=np.int64)               # 1000 identical items: one prefix, 16 codes
    other = np.array([[5, 5, 1], [5, 5, 1], [6, 0, 0]])      # an ordinary collision elsewhere
    codes = np.concatenate([same, other])
    got, stats = resolve(codes, k, lambda rows: np.zeros((len(rows), k), dtype=np.float32))
    sids = _sids(got)
    assert len(set(sids)) == len(sids)
    Catalogue(dict(zip(map(str, range(len(sids))), sids)))     # prefix-free too
    assert stats["overflow_prefixes"] == 1 and stats["extra_level_items"] == 1000
    assert stats["max_levels"] == 5                            # ceil(1000/16)=63 per code > 16 -> two digits
    counts = np.bincount(got[:1000, 2], minlength=k)
    assert counts.max() <= 63 and (counts > 0).all()          # spread over the last level, capacity ceil(n/K)
    assert (got[1000:, 3:] == -1).all()                        # ordinary items keep 3 levels
    assert (got[1000:1002, :2] == 5).all() and got[1000, 2] != got[1001, 2]  # moved within prefix (5, 5)


def test_mixed_overflow_and_free_prefix_items():
    rng = np.random.default_rng(3)
    k = 4
    codes = np.concatenate([np.tile([[1, 2, 3]], (9, 1)), rng.integers(0, k, (40, 3))])
    cost = rng.random((len(codes), k)).astype(np.float32)
    got, _ = resolve(codes, k, lambda rows: cost[rows])
    check_distinct(got)
    Catalogue(dict(zip(map(str, range(len(got))), _sids(got))))


def test_code_space_too_small():
    with pytest.raises(SidsError, match="do not fit the code space"):
        resolve(np.zeros((17, 2), dtype=np.int64), 4, lambda rows: np.zeros((len(rows), 4)))
    with pytest.raises(SidsError, match="codes must lie"):
        resolve(np.array([[0, 9]]), 4, lambda rows: np.zeros((len(rows), 4)))


def test_check_distinct_detects_violations():
    with pytest.raises(SidsError):
        check_distinct(np.array([[1, 2, 3], [1, 2, 3]]))
    with pytest.raises(SidsError, match="prefix"):
        check_distinct(np.array([[1, 2, 3, -1], [1, 2, 3, 0]]))


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(0)
    codes = np.concatenate([np.zeros((400, 3), dtype=np.int64), rng.integers(0, 16, (3000, 3))])
    cost = rng.random((len(codes), 16)).astype(np.float32)
    whole, stats = resolve(codes, 16, lambda rows: cost[rows], chunk=65536)
    assert stats["overflow_prefixes"] >= 1
    for chunk in (1, 7, 1000):
        np.testing.assert_array_equal(resolve(codes, 16, lambda rows: cost[rows], chunk=chunk)[0], whole)
