"""Amazon 2018 / 2023 raw readers: results checked against a plain-Python reference of paper §4.1.1."""
from __future__ import annotations

import gzip
import itertools
import json
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from sidreasoner_core.data import amazon_raw
from sidreasoner_core.data.config import DataConfig
from sidreasoner_core.data.errors import DataError
from sidreasoner_core.dataset import QUARANTINE_FILE, read_items, read_samples
from sidreasoner_core.data.sequences import k_core_mask
from sidreasoner_core.data.stage import build, run

from data_helpers import make_raw, meta_record, review_record, write_lines

FORMATS = ("amazon2018", "amazon2023")


# ------------------------------------------------------------------ plain-Python reference


def naive_k_core(pairs: list[tuple[str, str]], k: int) -> set[tuple[str, str]]:
    """Remove one under-k user or item at a time until none is left (order does not matter)."""
    kept = set(pairs)
    while True:
        uc = Counter(u for u, _ in kept)
        ic = Counter(i for _, i in kept)
        low = next(((u, i) for u, i in sorted(kept) if uc[u] < k or ic[i] < k), None)
        if low is None:
            return kept
        u, i = low
        kept = {p for p in kept if not ((uc[u] < k and p[0] == u) or (ic[i] < k and p[1] == i))}


def reference(inter, titled: set[str], k: int, max_history: int = 10):
    """paper §4.1.1 written the slow, obvious way: (samples by split, kept items)."""
    rows = [(u, i, t, n) for n, (u, i, t) in enumerate(inter) if i in titled]
    rows.sort(key=lambda r: (r[0], r[2], r[3]))
    seen, first = set(), []
    for u, i, t, n in rows:
        if (u, i) not in seen:
            seen.add((u, i))
            first.append((u, i, t, n))
    core = naive_k_core([(u, i) for u, i, _, _ in first], k)
    seq = defaultdict(list)
    for u, i, t, n in first:
        if (u, i) in core:
            seq[u].append((i, t))
    samples = []
    for u, s in seq.items():
        for j in range(1, len(s)):
            samples.append((s[j][1], u, j, tuple(x for x, _ in s[max(0, j - max_history):j]), s[j][0]))
    samples.sort()
    n = len(samples)
    c1, c2 = int(n * 0.8), int(n * 0.9)
    split = {"train": samples[:c1], "valid": samples[c1:c2], "test": samples[c2:]}
    return {k_: [(u, h, tgt, t) for t, u, _, h, tgt in v] for k_, v in split.items()}, {i for _, i in core}


# ------------------------------------------------------------------ readers


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_reader_matches_reference(tmp_path, fmt, gz):
    no_title, no_meta = ("B00002", "B00011"), ("B00004",)
    root, inter = make_raw(tmp_path / "Tools", fmt, gz=gz, n_users=90, seed=3, no_title=no_title, no_meta=no_meta)
    assert amazon_raw.detect(root) == fmt
    art = run(DataConfig(k_core=3), root, tmp_path / "out")
    items, samples = read_items(art.path), read_samples(art.path)

    titled = {i for _, i, _ in inter} - set(no_title) - set(no_meta)
    want, want_items = reference(inter, titled, k=3)
    assert set(items["item_id"]) == want_items
    for split in ("train", "valid", "test"):
        got = samples[samples["split"] == split]
        assert list(zip(got["user_id"], got["history"].map(tuple), got["target"], got["timestamp"])) == want[split]
    assert (items["category"] == "Tools").all() and items["reference_sid"].isna().all()
    row = items.set_index("item_id").loc["B00000"]
    assert row["title"] == "Widget B00000 & Co" and row["brand"] == "Brand0"
    assert row["categories"] == "Industrial & Scientific > Tools" and "About B00000." in row["description"]

    stats = art.manifest["stats"]
    assert stats["format"] == fmt and stats["items"] == len(want_items)
    d = stats["dropped"]
    assert d["items_no_title"] == len(no_title)
    assert d["reviews_no_meta"] == sum(i in no_meta for _, i, _ in inter)
    assert d["reviews_no_title"] == sum(i in no_title for _, i, _ in inter)
    # every review is either a kept interaction or counted under one reason
    kept = len(samples) + samples["user_id"].nunique()
    assert kept + d["reviews_no_meta"] + d["reviews_no_title"] + d["reviews_duplicate"] + d["reviews_k_core"] == len(inter)


def test_both_formats_give_the_same_dataset(tmp_path):
    outs = []
    for fmt in FORMATS:
        root, _ = make_raw(tmp_path / fmt / "Cat", fmt, seed=5)
        items, samples, stats, _ = build(DataConfig(), root)
        outs.append((items.drop(columns="description"), samples.drop(columns="_row"), stats["samples"]))
    assert outs[0][0].equals(outs[1][0]) and outs[0][1].equals(outs[1][1]) and outs[0][2] == outs[1][2]


@pytest.mark.parametrize("names", [("reviews.json", "meta.json"), ("Tools_5.json.gz", "meta_Tools.json.gz"),
                                   ("reviews.jsonl", "meta.jsonl.gz")])
def test_accepted_file_names(tmp_path, names):
    root, _ = make_raw(tmp_path / "Tools", "amazon2018", names=names, seed=1)
    assert amazon_raw.detect(root) == "amazon2018"
    _, samples, _, _ = build(DataConfig(), root)
    assert len(samples) > 0


def test_ambiguous_or_foreign_directories(tmp_path):
    root, _ = make_raw(tmp_path / "Tools", "amazon2018")
    (root / "other_reviews.json").write_text("{}\n")
    with pytest.raises(DataError, match="more than one reviews file"):
        amazon_raw.detect(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert amazon_raw.detect(empty) is None
    with pytest.raises(DataError, match="cannot detect the input format"):
        build(DataConfig(), empty)


def test_format_named_but_files_are_the_other_one(tmp_path):
    root, _ = make_raw(tmp_path / "Tools", "amazon2023")
    with pytest.raises(DataError, match="look like amazon2023"):
        build(DataConfig(format="amazon2018"), root)


def test_2023_timestamps_are_ms_and_sub_second_order_counts(tmp_path):
    root = tmp_path / "Cat"
    root.mkdir()
    items = [f"I{j}" for j in range(4)]
    write_lines(root / "meta_Cat.jsonl", [json.dumps(meta_record("amazon2023", i, f"Item {i}")) for i in items])
    lines = []
    for u in range(12):  # the same second, distinct milliseconds, written in reverse time order
        for j, i in enumerate(items):
            lines.append({"user_id": f"u{u}", "parent_asin": i, "timestamp": 1_600_000_000_000 + (u * 10 + 3 - j)})
    write_lines(root / "Cat.jsonl", [json.dumps(r) for r in lines])
    _, samples, _, _ = build(DataConfig(k_core=2), root)
    assert (samples["timestamp"] == 1_600_000_000).all()
    one = samples[samples["user_id"] == "u0"].sort_values("timestamp", kind="stable")
    assert max(one["history"].map(len)) == 3
    assert list(one["history"].iloc[-1]) == ["I3", "I2", "I1"]  # oldest first by ms


# ------------------------------------------------------------------ k-core and split


def brute_force_k_core(pairs: list[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """The largest subset in which every user and item has >= k pairs, by trying every subset."""
    best: set = set()
    for r in range(len(pairs), 0, -1):
        for sub in itertools.combinations(pairs, r):
            uc, ic = Counter(u for u, _ in sub), Counter(i for _, i in sub)
            if all(uc[u] >= k and ic[i] >= k for u, i in sub):
                return set(sub)
    return best


def test_k_core_is_the_largest_fixed_point():
    rng = random.Random(0)
    for trial in range(60):
        k = rng.choice([2, 3])
        pairs = sorted({(rng.randrange(5), rng.randrange(5)) for _ in range(rng.randint(4, 13))})
        users, items = np.array([u for u, _ in pairs]), np.array([i for _, i in pairs])
        mask = k_core_mask(users, items, k)
        kept = {p for p, m in zip(pairs, mask) if m}
        assert kept == brute_force_k_core(pairs, k), (trial, pairs, k)


def test_k_core_property_on_larger_graphs():
    rng = np.random.default_rng(1)
    for k in (2, 5, 8):
        w = 1.0 / np.arange(1, 201) ** 0.8
        pairs = sorted({(u, int(i)) for u in range(300)
                        for i in rng.choice(200, size=rng.integers(1, 25), p=w / w.sum())})
        users, items = np.array([u for u, _ in pairs]), np.array([i for _, i in pairs])
        mask = k_core_mask(users, items, k)
        kept = [p for p, m in zip(pairs, mask) if m]
        uc, ic = Counter(u for u, _ in kept), Counter(i for _, i in kept)
        assert 0 < len(kept) < len(pairs) and min(uc.values()) >= k and min(ic.values()) >= k
        assert set(kept) == naive_k_core(pairs, k)  # nothing that could be kept was dropped


def test_split_is_ordered_by_target_time(tmp_path):
    root, _ = make_raw(tmp_path / "Cat", "amazon2018", n_users=200, n_items=60, seed=9)
    _, samples, stats, _ = build(DataConfig(), root)
    ts = {s: samples.loc[samples["split"] == s, "timestamp"] for s in ("train", "valid", "test")}
    assert ts["train"].max() <= ts["valid"].min() and ts["valid"].max() <= ts["test"].min()
    n = len(samples)
    assert stats["samples"] == {"train": int(n * 0.8), "valid": int(n * 0.9) - int(n * 0.8),
                                "test": n - int(n * 0.9)}
    assert samples["history"].map(len).max() <= 10
    again = build(DataConfig(), root)[1]
    assert samples.drop(columns="_row").equals(again.drop(columns="_row"))  # deterministic ties


# ------------------------------------------------------------------ bad input


def _corrupt(root, name_part, lineno, text):
    file = next(p for p in root.iterdir() if name_part(p.name))
    opener = gzip.open if file.name.endswith(".gz") else open
    with opener(file, "rt") as f:
        lines = f.read().splitlines()
    lines.insert(lineno - 1, text)
    write_lines(file, lines)
    return file


is_reviews = lambda n: not n.startswith("meta")  # noqa: E731
is_meta = lambda n: n.startswith("meta")  # noqa: E731


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_malformed_line_fails_with_file_and_line(tmp_path, fmt, gz):
    root, _ = make_raw(tmp_path / "Cat", fmt, gz=gz)
    file = _corrupt(root, is_reviews, 17, '{"broken": ')
    with pytest.raises(DataError, match=rf"{file.name}:17: not valid JSON"):
        build(DataConfig(), root)


@pytest.mark.parametrize("fmt", FORMATS)
def test_skip_bad_lines_quarantines_and_counts(tmp_path, fmt):
    root, _ = make_raw(tmp_path / "Cat", fmt)
    _corrupt(root, is_reviews, 5, "not json at all")
    _corrupt(root, is_reviews, 9, "[1, 2]")
    _corrupt(root, is_meta, 3, '{"title": "no id"}')
    rname = amazon_raw.FORMATS[fmt].reviews[2].name
    _corrupt(root, is_reviews, 12, json.dumps({**review_record(fmt, "U1", "B00001", 5), rname: "soon"}))
    clean, _ = make_raw(tmp_path / "clean" / "Cat", fmt)
    art = run(DataConfig(skip_bad_lines=True), root, tmp_path / "out")
    d = art.manifest["stats"]["dropped"]
    assert d["bad_line:malformed_json"] == 1 and d["bad_line:not_an_object"] == 1
    assert d["bad_line:missing_field"] == 1 and d["bad_line:bad_field"] == 1
    recs = [json.loads(x) for x in (art.path / QUARANTINE_FILE).read_text().splitlines()]
    assert sorted((r["reason"], r["line"]) for r in recs) == [
        ("bad_field", 12), ("malformed_json", 5), ("missing_field", 3), ("not_an_object", 9)]
    assert any("field 'asin'" in r["detail"] or "field 'parent_asin'" in r["detail"] for r in recs)
    # the good lines give exactly the clean dataset
    assert read_samples(art.path).equals(read_samples(run(DataConfig(), clean, tmp_path / "o2").path))
    with pytest.raises(DataError, match=r"meta_Cat\.jsonl?:3: field '(parent_)?asin' is missing"):
        build(DataConfig(), root)  # the meta file is read first


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_field_is_named(tmp_path, fmt):
    root, _ = make_raw(tmp_path / "Cat", fmt)
    uname = amazon_raw.FORMATS[fmt].reviews[0].name
    rec = review_record(fmt, "U1", "B00001", 5)
    del rec[uname]
    file = _corrupt(root, is_reviews, 4, json.dumps(rec))
    with pytest.raises(DataError, match=rf"{file.name}:4: field '{uname}' is missing"):
        build(DataConfig(), root)


def test_missing_field_line_counts_blank_lines(tmp_path):
    """The vectorized pass skips blank lines; the reported line number still counts them."""
    root, _ = make_raw(tmp_path / "Cat", "amazon2018")
    _corrupt(root, is_reviews, 3, "")
    _corrupt(root, is_reviews, 4, "   ")
    file = _corrupt(root, is_reviews, 8, json.dumps({"reviewerID": "U1", "unixReviewTime": 5}))
    with pytest.raises(DataError, match=rf"{file.name}:8: field 'asin' is missing"):
        build(DataConfig(), root)


def test_truncated_gzip_names_the_file(tmp_path):
    root, _ = make_raw(tmp_path / "Cat", "amazon2018", gz=True)
    file = next(p for p in root.iterdir() if is_reviews(p.name))
    file.write_bytes(file.read_bytes()[:-40])
    with pytest.raises(DataError, match=rf"{file.name}:\d+: cannot read"):
        build(DataConfig(), root)


def test_empty_results_name_the_filter(tmp_path):
    root, _ = make_raw(tmp_path / "a" / "Cat", "amazon2018", n_users=6, n_items=50, seed=2)
    with pytest.raises(DataError, match="no interactions left after 5-core"):
        build(DataConfig(), root)
    items = [f"B{j:05d}" for j in range(40)]
    root, _ = make_raw(tmp_path / "b" / "Cat", "amazon2018", no_title=tuple(items))
    with pytest.raises(DataError, match="no items left after the title filter"):
        build(DataConfig(), root)
    root, _ = make_raw(tmp_path / "c" / "Cat", "amazon2023", no_meta=tuple(items[:20]), no_title=tuple(items[20:]))
    with pytest.raises(DataError, match="no items left after the title filter"):
        build(DataConfig(), root)
    root = tmp_path / "d" / "Cat"
    make_raw(root, "amazon2018")
    write_lines(root / "meta_Cat.json", [json.dumps(meta_record("amazon2018", "ZZZ", "Unrelated item"))])
    with pytest.raises(DataError, match="no reviews left after the title filter"):
        build(DataConfig(), root)


def test_meta_cleaning_is_counted(tmp_path):
    root, inter = make_raw(tmp_path / "Cat", "amazon2018", seed=4)
    meta = root / "meta_Cat.json"
    lines = meta.read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    recs[0]["title"] = "Widget &amp; Sons"
    recs[1]["title"] = '<span class="a-size-medium">x</span>'
    recs[2]["title"] = " a "
    dup = dict(recs[3], title="Second copy")
    write_lines(meta, [json.dumps(r) for r in recs] + [json.dumps(dup), ""])
    items, samples, stats, _ = build(DataConfig(k_core=2), root)
    d = stats["dropped"]
    assert d["meta_duplicate"] == 1 and d["items_no_title"] == 2
    titles = dict(zip(items["item_id"], items["title"]))
    assert titles.get(recs[0]["asin"]) == "Widget & Sons"
    assert recs[1]["asin"] not in titles and recs[2]["asin"] not in titles
    assert titles.get(recs[3]["asin"], recs[3]["title"]) == recs[3]["title"]  # the first record wins
    write_lines(meta, [])
    with pytest.raises(DataError, match="meta_Cat.json: no meta records"):
        build(DataConfig(), root)


def test_odd_optional_fields_fall_back_to_the_line_reader(tmp_path):
    """Types the vectorized pass does not expect (a string `details`, an object description, a numeric
    title) are read by the line-by-line pass, giving the same kind of rows instead of an error."""
    root, _ = make_raw(tmp_path / "Cat", "amazon2023", seed=6)
    meta = root / "meta_Cat.jsonl"
    recs = [json.loads(x) for x in meta.read_text().splitlines()]
    recs[0]["details"] = json.dumps({"Brand": "StrBrand"})
    recs[1]["description"] = {"a": "Object", "b": "description"}
    recs[2]["title"] = 12345
    write_lines(meta, [json.dumps(r) for r in recs])
    items, _, stats, bad = build(DataConfig(k_core=2), root)
    assert not bad.counts
    row = items.set_index("item_id")
    ids = [r["parent_asin"] for r in recs[:3]]
    assert row.loc[ids[0], "brand"] == "StrBrand"
    assert row.loc[ids[1], "description"].startswith("Object description")
    assert row.loc[ids[2], "title"] == "12345"


def test_config_errors_name_the_field():
    from sidreasoner_core.config import ConfigError

    with pytest.raises(ConfigError, match="field 'split_ratio'"):
        DataConfig.build({"split_ratio": [0.8, -0.1, 0.3]}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="field 'k_core'"):
        DataConfig.build({"k_core": 0}, source="cfg.yaml")
