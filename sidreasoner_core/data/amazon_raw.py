"""Readers for the raw Amazon Reviews dumps (2018 and 2023) -> items + samples.

Files accepted in the input directory (JSON lines, plain or gzip, `.json` or `.jsonl`):

- meta:    exactly one file whose name starts with `meta`, e.g. `meta_Industrial_and_Scientific.json.gz`
           (as Amazon ships it), `meta.jsonl`;
- reviews: exactly one other `*.json[l][.gz]` file, e.g. `Industrial_and_Scientific.json.gz`,
           `Industrial_and_Scientific_5.json.gz`, `Industrial_and_Scientific.jsonl`, `reviews.json`
           (`item.json`, `index.json` and `quarantine.jsonl` are never taken for reviews).

The format is told by the reviews' field names:
- amazon2018: reviews `reviewerID, asin, unixReviewTime` (seconds); meta `asin, title, description,
  brand, category`;
- amazon2023: reviews `user_id, parent_asin, timestamp` (milliseconds); meta `parent_asin, title,
  description, features, store, categories, details`.

Reading: a vectorized pyarrow pass reads only the needed fields. If it fails (a malformed line, a
field of an unexpected type), the file is read again line by line with `json.loads`, which names
the first bad line (`file:line`) or, with `skip_bad_lines`, quarantines every bad line by reason.
Both passes give the same table for a good file.

Processing (paper §4.1.1): drop items without a usable title, dedupe each user's (user, item) pairs
keeping the first in time, iterative k-core on users and items, sliding windows of <= max_history
previous items, global split by target time. Every dropped row is counted by reason.

Encoding: text is UTF-8; a read field holding invalid UTF-8 is an error naming file, line and field,
or with `skip_bad_lines` a quarantined line ("invalid_utf8"), never replaced or passed on.
Timestamps: the unit is detected per file and checked (`timestamps`).
"""
from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from tqdm.auto import tqdm

from . import rules, sequences, timestamps
from .config import DataConfig
from .errors import BadLines, DataError

log = logging.getLogger(__name__)

JSONL_NAME = re.compile(r"^.+\.jsonl?(\.gz)?$")
NOT_REVIEWS = {"item.json", "index.json", "quarantine.jsonl"}


# ---------------------------------------------------------------- field specs


@dataclass(frozen=True)
class Field:
    """One JSON field: `kind` is id | time | text | list | brand (details.Brand); `out` its column."""

    name: str
    out: str
    kind: str
    sep: str = " "

    @property
    def arrow_type(self) -> pa.DataType:
        return {"id": pa.string(), "time": pa.int64(), "text": pa.string(), "list": pa.list_(pa.string()),
                "brand": pa.struct([("Brand", pa.string())])}[self.kind]

    def convert(self, value):
        """Python-side normalization (the line-by-line pass); raises ValueError on a wrong type."""
        if value is None:
            return None
        k = self.kind
        if k == "id":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(f"expected a string id, got {type(value).__name__}")
            return str(value).strip()
        if k == "time":
            if isinstance(value, bool):
                raise ValueError("expected an integer timestamp, got bool")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str) and value.strip().isdigit():
                return int(value.strip())
            raise ValueError(f"expected an integer timestamp, got {value!r:.40}")
        if k == "brand":
            if isinstance(value, str):  # some 2023 copies hold `details` as a JSON string
                try:
                    value = json.loads(value)
                except ValueError:
                    return None
            return _join(value.get("Brand"), " ") if isinstance(value, dict) else None
        return _join(value, self.sep)


def _join(value, sep: str) -> str | None:
    """Optional text: never an error; lists are joined, an object's values too (odd rows in real dumps)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return sep.join(s for s in (_join(v, " ") for v in value) if s)
    return str(value).strip()


@dataclass(frozen=True)
class RawFormat:
    name: str
    reviews: tuple[Field, ...]  # user_id, item_id, ts in that order
    meta: tuple[Field, ...]     # item_id first
    per_second: int             # timestamp units per second


FORMATS = {
    "amazon2018": RawFormat(
        "amazon2018",
        reviews=(Field("reviewerID", "user_id", "id"), Field("asin", "item_id", "id"),
                 Field("unixReviewTime", "ts", "time")),
        meta=(Field("asin", "item_id", "id"), Field("title", "title", "text"),
              Field("description", "description", "list"), Field("brand", "brand", "text"),
              Field("category", "categories", "list", sep=" > ")),
        per_second=1),
    "amazon2023": RawFormat(
        "amazon2023",
        reviews=(Field("user_id", "user_id", "id"), Field("parent_asin", "item_id", "id"),
                 Field("timestamp", "ts", "time")),
        meta=(Field("parent_asin", "item_id", "id"), Field("title", "title", "text"),
              Field("description", "description", "list"), Field("features", "features", "list"),
              Field("store", "brand", "text"), Field("details", "details_brand", "brand"),
              Field("categories", "categories", "list", sep=" > ")),
        per_second=1000),
}


# ---------------------------------------------------------------- files and detection


def _open_bytes(file: Path):
    return gzip.open(file, "rb") if file.name.endswith(".gz") else open(file, "rb")


def find_files(path: Path) -> tuple[Path, Path] | None:
    """(reviews, meta) in `path`, None when either is absent; ambiguity is an error naming the files."""
    if not path.is_dir():
        return None
    cands = sorted(p for p in path.iterdir() if p.is_file() and JSONL_NAME.match(p.name))
    metas = [p for p in cands if p.name.lower().startswith("meta")]
    reviews = [p for p in cands if not p.name.lower().startswith("meta") and p.name not in NOT_REVIEWS]
    if not metas or not reviews:
        return None
    if len(metas) > 1:
        raise DataError(f"{path}: more than one meta file: {[p.name for p in metas]}")
    if len(reviews) > 1:
        raise DataError(f"{path}: more than one reviews file: {[p.name for p in reviews]} "
                        "(keep one reviews file and one meta*.json[l][.gz] per directory)")
    return reviews[0], metas[0]


def _peek_format(file: Path, max_lines: int = 50) -> str | None:
    """The format whose review fields the first parseable JSON object holds."""
    try:
        with _open_bytes(file) as fh:
            for i, raw in enumerate(fh):
                if i >= max_lines:
                    break
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(rec, dict):
                    continue
                for name, fmt in FORMATS.items():
                    if any(f.name in rec for f in fmt.reviews if f.kind == "time"):
                        return name
    except (OSError, EOFError) as exc:
        raise DataError(f"{file}: cannot read ({exc})") from None
    return None


def detect(path: Path) -> str | None:
    """"amazon2018" | "amazon2023" for a directory holding a reviews and a meta file, else None."""
    files = find_files(Path(path))
    return _peek_format(files[0]) if files else None


# ---------------------------------------------------------------- reading


class LineMap:
    """Table row -> file line. Rows are the file's non-blank lines in order, minus skipped ones.

    The fast pass does not know line numbers; they are counted only when an error needs one.
    """

    def __init__(self, file: Path, lines: np.ndarray | None = None):
        self.file = file
        self._lines = lines

    def line(self, row: int) -> int:
        if self._lines is None:
            with _open_bytes(self.file) as fh:
                self._lines = np.fromiter((i for i, raw in enumerate(fh, 1) if raw.strip()), dtype=np.int64)
        return int(self._lines[row])


def _read_fast(file: Path, fields: tuple[Field, ...]) -> pa.Table | None:
    """Stream the file through Arrow's JSON reader in blocks, keeping only `fields` (bounded memory:
    a multi-GB `.jsonl.gz` dump costs the size of these columns, not of the file); progress in
    compressed bytes. None when a line needs the line-by-line pass (it names the line)."""
    schema = pa.schema([(f.name, f.arrow_type) for f in fields])
    raw = None
    try:
        raw = pa.OSFile(str(file), "rb")
        size = raw.size()
        src = pa.CompressedInputStream(raw, "gzip") if file.name.endswith(".gz") else raw
        reader = pj.open_json(src, read_options=pj.ReadOptions(block_size=8 << 20),
                              parse_options=pj.ParseOptions(explicit_schema=schema,
                                                            unexpected_field_behavior="ignore"))
        batches = []
        with tqdm(total=size, desc=f"reading {file.name}", unit="B", unit_scale=True, mininterval=2,
                  leave=False) as bar:
            for batch in reader:
                batches.append(batch)
                bar.update(raw.tell() - bar.n)
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        log.info("%s: vectorized reader stopped (%s); reading line by line", file.name, exc)
        return None
    except (OSError, EOFError) as exc:  # e.g. a truncated .gz: the line-by-line pass names the line
        log.info("%s: vectorized reader failed (%s); reading line by line", file.name, exc)
        return None
    finally:
        if raw is not None:
            raw.close()
    try:  # Arrow's JSON parser copies invalid UTF-8 bytes into string columns unchecked
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        log.info("%s: invalid UTF-8 (%s); reading line by line to name the line and field", file.name, exc)
        return None
    return table


def invalid_text(value) -> bool:
    """True for text that cannot be UTF-8: undecodable bytes (kept as surrogate escapes) or a lone
    surrogate from a JSON `\\udcxx` escape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def _bad_bytes(value: str) -> str:
    """The offending characters of `value` as they were in the file, for the message."""
    bad = [c for c in value if 0xD800 <= ord(c) <= 0xDFFF][:4]
    return " ".join(f"0x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" for c in bad)


def _normalize(table: pa.Table, fields: tuple[Field, ...]) -> dict[str, pa.Array]:
    cols = {}
    for f in fields:
        col = table.column(f.name)
        if f.kind == "list":
            col = pc.binary_join(col, f.sep)
        elif f.kind == "brand":
            col = pc.struct_field(col, "Brand")
        if f.kind != "time":
            col = pc.utf8_trim_whitespace(col)
        cols[f.out] = col
    return cols


def _read_slow(file: Path, fields: tuple[Field, ...], bad: BadLines) -> tuple[dict[str, list], np.ndarray]:
    cols: dict[str, list] = {f.out: [] for f in fields}
    lines: list[int] = []
    try:
        with _open_bytes(file) as fh:
            lineno = 0
            for lineno, raw in enumerate(tqdm(fh, desc=f"reading {file.name}", unit=" lines",
                                              mininterval=2, leave=False), 1):
                text = raw.strip()
                if not text:
                    continue
                # Invalid UTF-8 stays visible (surrogate escapes) until a field that is read is checked.
                decoded = text.decode("utf-8", "surrogateescape")
                snippet = text[:2000].decode("utf-8", "backslashreplace")
                try:
                    rec = json.loads(decoded)
                except ValueError as exc:
                    bad.bad(file, lineno, "malformed_json", f"not valid JSON ({exc})", snippet)
                    continue
                if not isinstance(rec, dict):
                    bad.bad(file, lineno, "not_an_object", f"expected a JSON object, got {type(rec).__name__}", snippet)
                    continue
                values = []
                for f in fields:
                    try:
                        value = f.convert(rec.get(f.name))
                    except ValueError as exc:
                        bad.bad(file, lineno, "bad_field", f"field '{f.name}': {exc}", snippet)
                        break
                    if invalid_text(value):
                        bad.bad(file, lineno, "invalid_utf8", f"field '{f.name}': invalid UTF-8 "
                                f"({_bad_bytes(value)}); fix the file's encoding or pass --skip-bad-lines", snippet)
                        break
                    values.append(value)
                else:
                    for f, v in zip(fields, values):
                        cols[f.out].append(v)
                    lines.append(lineno)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{file}:{lineno + 1}: cannot read past this line ({exc})") from None
    return cols, np.asarray(lines, dtype=np.int64)


def read_jsonl(file: Path, fields: tuple[Field, ...], bad: BadLines) -> pd.DataFrame:
    """The `fields` of every record as a DataFrame (plus `_rec`, the record's order in the file).

    A record whose id/time field is missing or empty is a bad line ("missing_field").
    """
    return read_jsonl_lines(file, fields, bad)[0]


def read_jsonl_lines(file: Path, fields: tuple[Field, ...], bad: BadLines) -> tuple[pd.DataFrame, LineMap]:
    """`read_jsonl` and the map from `_rec` to the file's line numbers."""
    table = _read_fast(file, fields)
    if table is not None:
        cols = _normalize(table, fields)
        linemap = LineMap(file)
        df = pa.table(cols).to_pandas()  # arrow-backed strings: no Python object per value
    else:
        raw, lines = _read_slow(file, fields, bad)
        linemap = LineMap(file, lines)
        df = pd.DataFrame(raw)
    df["_rec"] = np.arange(len(df), dtype=np.int64)
    required = [f for f in fields if f.kind in ("id", "time")]
    missing = np.zeros(len(df), dtype=bool)
    for f in required:
        col = df[f.out]
        miss = col.isna().to_numpy()
        if f.kind == "id":
            miss = miss | (col.fillna("") == "").to_numpy()
        for row in np.flatnonzero(miss & ~missing):
            bad.bad(file, linemap.line(row), "missing_field", f"field '{f.name}' is missing or empty")
        missing |= miss
    if missing.any():
        df = df[~missing].reset_index(drop=True)
    if "ts" in df:
        df["ts"] = df["ts"].astype("int64")
    return df, linemap


# ---------------------------------------------------------------- items and samples

def read_items(file: Path, fmt: RawFormat, config: DataConfig, category: str, bad: BadLines,
               dropped: dict) -> pd.DataFrame:
    df = read_jsonl(file, fmt.meta, bad)
    if df.empty:
        raise DataError(f"{file}: no meta records")
    dup = df.duplicated("item_id", keep="first").to_numpy()
    dropped["meta_duplicate"] = int(dup.sum())
    df = df[~dup].reset_index(drop=True)
    for col in ("title", "description", "brand", "categories"):
        df[col] = df[col].fillna("") if col in df else ""
    if "features" in df:  # 2023: features are part of the item's description
        df["description"] = (df["description"] + " " + df["features"].fillna("")).str.strip()
    if "details_brand" in df:  # 2023: the store is the brand; details.Brand when there is no store
        df["brand"] = df["brand"].where(df["brand"] != "", df["details_brand"].fillna(""))
    df["title"] = rules.clean_titles(df["title"])
    ok = rules.usable_title(df["title"], config.min_title_chars)
    df["_titled"] = ok
    dropped["items_no_title"] = int((~ok).sum())
    if not ok.any():
        raise DataError(f"{file}: no items left after the title filter (min_title_chars={config.min_title_chars})")
    df["category"] = category
    df["reference_sid"] = None
    return df


def _isin(col: pd.Series, values) -> np.ndarray:
    """Vectorized membership on Arrow strings (pandas' isin would go through Python objects)."""
    arr = pa.array(col.astype(str).array, type=pa.string())
    vals = values if isinstance(values, pa.Array) else pa.array(pd.Series(values).astype(str).array, type=pa.string())
    return pc.is_in(arr, value_set=vals).to_numpy(zero_copy_only=False)


def build(path: Path, fmt_name: str, config: DataConfig, category: str,
          bad: BadLines) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """(items, samples, dropped counts, timestamps info) for a raw Amazon directory; samples carry
    `_row` for errors."""
    path = Path(path)
    files = find_files(path)
    if files is None:
        raise DataError(f"{path}: expected one reviews file and one meta*.json[l][.gz] file (plain or .gz)")
    reviews_file, meta_file = files
    seen = _peek_format(reviews_file)
    if seen is not None and seen != fmt_name:
        raise DataError(f"{reviews_file}: fields look like {seen}, but format {fmt_name} was asked for")
    fmt = FORMATS[fmt_name]
    dropped: dict[str, int] = {}

    meta = read_items(meta_file, fmt, config, category, bad, dropped)
    titled = meta.loc[meta["_titled"], "item_id"]
    known = meta["item_id"]

    rev, lines = read_jsonl_lines(reviews_file, fmt.reviews, bad)
    if rev.empty:
        raise DataError(f"{reviews_file}: no reviews")
    rec = rev["_rec"].to_numpy()
    units = timestamps.detect_units(rev["ts"].to_numpy(), fmt.per_second, reviews_file, fmt.reviews[2].name,
                                    lambda row: lines.line(int(rec[row])), bad)
    if not units.keep.all():
        rev = rev[units.keep].reset_index(drop=True)
    seconds = rev["ts"].to_numpy() // units.per_second
    info = {**units.stats(), "first": timestamps.day(seconds.min()), "last": timestamps.day(seconds.max()),
            "window": [d.isoformat() for d in config.date_window] if config.date_window else None}
    in_window = timestamps.window_mask(seconds, config.date_window)
    dropped["reviews_outside_window"] = int((~in_window).sum())
    if not in_window.all():
        rev = rev[in_window].reset_index(drop=True)
        if rev.empty:
            raise DataError(f"{reviews_file}: no reviews in the date window {info['window'][0]}..{info['window'][1]} "
                            f"(the file's reviews run from {info['first']} to {info['last']})")
    in_meta = _isin(rev["item_id"], known)
    has_title = _isin(rev["item_id"], titled)
    dropped["reviews_no_meta"] = int((~in_meta).sum())
    dropped["reviews_no_title"] = int((in_meta & ~has_title).sum())
    rev = rev[has_title]
    if rev.empty:
        raise DataError(f"{reviews_file}: no reviews left after the title filter "
                        f"(no reviewed item has a meta record with a usable title in {meta_file.name})")

    inter = sequences.order(sequences.Interactions.from_frame(rev))
    del rev
    inter, n_dup = sequences.dedupe(inter)
    dropped["reviews_duplicate"] = n_dup

    keep = sequences.k_core_mask(inter.users, inter.items, config.k_core)
    dropped["reviews_k_core"] = int((~keep).sum())
    users_before, items_before = inter.n_users(), inter.n_items()
    inter = inter.select(keep)
    if not len(inter):
        raise DataError(f"{path}: no interactions left after {config.k_core}-core "
                        f"({users_before} users, {items_before} items before it)")
    dropped["users_k_core"] = int(users_before - inter.n_users())
    dropped["items_k_core"] = int(items_before - inter.n_items())
    dropped["items_no_reviews"] = int(len(titled) - items_before)

    samples = sequences.windows(inter, config.max_history, config.split_ratio, source=reviews_file.name,
                                per_second=units.per_second)
    if samples.empty:
        raise DataError(f"{path}: no samples after the sliding window (every user has a single interaction)")
    counts = samples["split"].value_counts()
    for split, r in zip(("train", "valid", "test"), config.split_ratio):
        if r > 0 and counts.get(split, 0) == 0:
            raise DataError(f"{path}: split '{split}' is empty after the {'/'.join(map(str, config.split_ratio))} "
                            f"time split of {len(samples)} samples (too few interactions)")

    items = meta[_isin(meta["item_id"], inter.item_id_list())].sort_values("item_id").reset_index(drop=True)
    items = items[["item_id", "title", "description", "brand", "categories", "category", "reference_sid"]]
    return items, samples, dropped, info
