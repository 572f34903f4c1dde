"""The SID codec and catalogue trie: round trips, malformed SIDs, trie vs a brute-force scan."""
from __future__ import annotations

import random

import pytest

from sidreasoner_core.sid import (Catalogue, SIDError, find_sids, format_sid, is_sid, parse_sid, parse_tokens,
                                  token, tokens_of, vocabulary)


def test_round_trip_random_codes():
    rng = random.Random(0)
    for _ in range(500):
        levels = rng.randint(1, 6)
        codes = tuple(rng.randrange(256) for _ in range(levels))
        sid = format_sid(codes)
        assert parse_sid(sid, levels=levels, codes_per_level=256) == codes
        assert tokens_of(sid) == [token(i, c) for i, c in enumerate(codes)]
        assert "".join(tokens_of(sid)) == sid
        assert parse_tokens(tokens_of(sid)) == codes


def test_format_examples():
    assert format_sid([12, 34, 5]) == "<a_12><b_34><c_5>"
    assert parse_sid("  <a_0><b_255><c_7>\n") == (0, 255, 7)
    assert len(vocabulary(3, 256)) == 768 and vocabulary(2, 2) == ["<a_0>", "<a_1>", "<b_0>", "<b_1>"]


@pytest.mark.parametrize("bad", [
    "", "junk", "<a_1><b_2>x", "x<a_1>", "<a_1> <b_2>", "<a_1>,<b_2>",   # junk around / between tokens
    "<b_1><a_2><c_3>", "<a_1><c_2><b_3>", "<a_1><a_2>",               # wrong level letters / order
    "<a_01><b_2><c_3>", "<a_1><b_00>",                                 # leading zeros
    "<a_-1>", "<a_1.5>", "<A_1>", "<a1>", "<a_>", "<a_1", "a_1>",       # malformed tokens
])
def test_malformed_sids_rejected(bad):
    with pytest.raises(SIDError):
        parse_sid(bad)
    assert not is_sid(bad)


def test_range_and_length_checks():
    with pytest.raises(SIDError, match="out of range"):
        parse_sid("<a_256><b_0><c_0>", codes_per_level=256)
    with pytest.raises(SIDError, match="levels"):
        parse_sid("<a_1><b_2>", levels=3)
    assert parse_sid("<a_255><b_0><c_0>", levels=3, codes_per_level=256) == (255, 0, 0)
    with pytest.raises(SIDError):
        parse_tokens(["<a_1>", "<c_2>"])
    with pytest.raises(SIDError):
        parse_tokens(["<a_1>", "junk"])


def test_find_sids_in_text():
    text = "history: <a_1><b_2><c_3>, <a_4><b_5><c_6> then <a_7><b_8><c_9>."
    assert find_sids(text) == ["<a_1><b_2><c_3>", "<a_4><b_5><c_6>", "<a_7><b_8><c_9>"]


def _random_catalogue(seed: int, n: int = 300, k: int = 8):
    """Random distinct 3-level SIDs over a small code space (dense prefixes), plus 4-level ones under
    prefixes no 3-level SID occupies (as collision resolution's extra level produces)."""
    rng = random.Random(seed)
    sids: dict[str, str] = {}
    used3 = set()
    while len(sids) < n:
        codes = tuple(rng.randrange(k) for _ in range(3))
        if codes in used3:
            continue
        used3.add(codes)
        sids[f"i{len(sids)}"] = format_sid(codes)
    free = [(a, b, c) for a in range(k) for b in range(k) for c in range(k) if (a, b, c) not in used3]
    for prefix in rng.sample(free, 5):
        for d in range(rng.randint(2, 4)):
            sids[f"x{len(sids)}"] = format_sid((*prefix, d))
    return sids


@pytest.mark.parametrize("seed", [0, 1])
def test_trie_matches_brute_force(seed):
    sids = _random_catalogue(seed)
    cat = Catalogue(sids)
    all_codes = {item: parse_sid(s) for item, s in sids.items()}
    assert len(cat) == len(sids) and cat.levels == 4
    prefixes = {()} | {c[:i] for c in all_codes.values() for i in range(1, len(c) + 1)}
    prefixes |= {(99,), (0, 99), (0, 0, 0, 0, 0)}  # off-trie prefixes
    for prefix in prefixes:
        expect = sorted({c[len(prefix)] for c in all_codes.values()
                         if len(c) > len(prefix) and c[:len(prefix)] == prefix})
        assert cat.allowed_codes(prefix) == expect, prefix
        assert cat.allowed_tokens([token(i, c) for i, c in enumerate(prefix)]) == \
            [token(len(prefix), c) for c in expect]
        under = sorted(i for i, c in all_codes.items() if c[:len(prefix)] == prefix)
        assert cat.items_with_prefix(prefix) == under
        assert cat.is_complete(prefix) == (prefix in set(all_codes.values()))
    for item, sid in sids.items():
        assert cat.item_by_sid[sid] == item and cat.sid_by_item[item] == sid and sid in cat


def test_catalogue_rejects_shared_and_prefix_sids():
    with pytest.raises(SIDError, match="shared"):
        Catalogue({"x": "<a_1><b_2><c_3>", "y": "<a_1><b_2><c_3>"})
    for pairs in ([("x", "<a_1><b_2><c_3><d_0>"), ("y", "<a_1><b_2><c_3>")],
                  [("y", "<a_1><b_2><c_3>"), ("x", "<a_1><b_2><c_3><d_0>")]):  # either order
        with pytest.raises(SIDError, match="prefix"):
            Catalogue(pairs)
    with pytest.raises(SIDError):
        Catalogue({"x": "<a_1><b_02><c_3>"})


# ---------------------------------------------------------------- the SID table of a sids artifact

def _sids_artifact(path, item_ids, sids, codes_per_level=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidreasoner_core.artifacts import write_artifact
    from sidreasoner_core.config import StageConfig

    class Cfg(StageConfig):
        codes_per_level: int | None = None

    with write_artifact(path, kind="sids", config=Cfg(codes_per_level=codes_per_level)) as d:
        pq.write_table(pa.table({"item_id": item_ids, "sid": sids}), d / "sids.parquet")
    return path


def test_read_sid_table_sizes_the_code_space_from_the_manifest(tmp_path):
    from sidreasoner_core.sid import SIDTable, read_sid_table

    art = _sids_artifact(tmp_path / "s", ["x", "y", "z"], ["<a_1><b_2>", "<a_3><b_0>", "<a_1><b_2>"], 16)
    table = read_sid_table(art)
    assert isinstance(table, SIDTable) and (table.levels, table.codes_per_level) == (2, 16)
    assert table.sid_by_item == {"x": "<a_1><b_2>", "y": "<a_3><b_0>", "z": "<a_1><b_2>"}
    assert table.item_by_sid == {"<a_1><b_2>": "x", "<a_3><b_0>": "y"}     # shared SID: first item
    assert table.vocabulary()[:2] == ["<a_0>", "<a_1>"] and len(table.vocabulary()) == 32
    assert table.token_info()["tokens"] == table.vocabulary()
    with pytest.raises(SIDError, match=r"sids.parquet: SID <a_1><b_2> is shared"):
        table.catalogue                                                       # the trie refuses shared SIDs
    bare = SIDTable.from_pairs([("x", "<a_1><b_2>"), ("y", "<a_3><b_0>")])
    assert bare.codes_per_level == 4 and len(bare.catalogue) == 2           # no config: largest code + 1


def test_read_sid_table_errors_name_file_row_and_item(tmp_path):
    from sidreasoner_core.sid import read_sid_table

    with pytest.raises(SIDError, match=r"missing"):
        read_sid_table(tmp_path)
    art = _sids_artifact(tmp_path / "bad", ["x", "7"], ["<a_1><b_2>", "<a_1><c_2>"])
    with pytest.raises(SIDError, match=r"sids.parquet: row 1 \(item '7'\): field 'sid'"):
        read_sid_table(art)
    art = _sids_artifact(tmp_path / "empty", ["x"], [None])
    with pytest.raises(SIDError, match=r"row 0 \(item 'x'\): field 'sid' is empty"):
        read_sid_table(art)
