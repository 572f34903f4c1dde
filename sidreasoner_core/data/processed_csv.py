"""Reader for the processed CSV format (train/valid/test.csv + item.json [+ index.json]).

It keeps the given split and, when `index.json` is present, its SIDs as `reference_sid`. It applies
the raw readers' rules (at parity): the same title filter and duplicate handling, counted under the
same reasons, the same UTF-8 policy, and an empty split is an error as after a raw time split.
"""
from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path

import pandas as pd

from . import rules
from .amazon_raw import invalid_text
from .errors import BadLines, DataError
from ..dataset import SPLITS

REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id")


def looks_like(path: Path) -> bool:
    return (path / "item.json").is_file() and all((path / f"{s}.csv").is_file() for s in SPLITS)


def _text(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v)
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
            if isinstance(parsed, list):
                return " ".join(str(v).strip() for v in parsed if str(v).strip())
        except (ValueError, SyntaxError):
            pass
    return text


def _json_text(file: Path, bad: BadLines) -> tuple[str, list[int]]:
    """The file as text; undecodable bytes kept as surrogate escapes, with the lines they are on."""
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        return text, [text.count("\n", 0, m.start()) + 1 for m in re.finditer("[\udc80-\udcff]", text)]


def _line_of(text: str, item_id: str) -> int:
    pos = text.find(json.dumps(item_id))
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1


def _load_json(file: Path, text: str):
    """A JSON object; repeated keys kept in order (json would keep only the last one silently)."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: pairs)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def read_items(path: Path, category: str, bad: BadLines, dropped: dict,
               min_title_chars: int = 2) -> tuple[pd.DataFrame, dict[str, str]]:
    """item.json (+ index.json) -> items, cleaned by the raw readers' rules (`rules`): a repeated item
    id keeps its first record, an item without a usable title is dropped, both counted; text with
    invalid UTF-8 is an error naming file, line, item and field (or a quarantined item).
    Returns (items, {dropped item id: reason}) so that samples naming a dropped item follow it."""
    item_file = path / "item.json"
    text, bad_lines = _json_text(item_file, bad)
    pairs = _load_json(item_file, text)
    if not isinstance(pairs, list):
        raise DataError(f"{item_file}: top level must be an object {{item_id: {{title, ...}}}}")
    sids = {}
    index_file = path / "index.json"
    if index_file.is_file():
        index_text, index_bad = _json_text(index_file, bad)
        if index_bad:
            raise DataError(f"{index_file}:{index_bad[0]}: invalid UTF-8; fix the file's encoding")
        index = _load_json(index_file, index_text)
        if not isinstance(index, list):
            raise DataError(f"{index_file}: top level must be an object {{item_id: [sid tokens]}}")
        sids = {str(k): "".join(v) if isinstance(v, list) else str(v) for k, v in index}
    rows, seen, removed = [], set(), {}
    dropped[rules.META_DUPLICATE] = 0
    for item_id, rec in pairs:
        item_id = str(item_id)
        if item_id in seen:
            dropped[rules.META_DUPLICATE] += 1
            continue
        seen.add(item_id)
        rec = dict(rec) if isinstance(rec, list) else rec
        if not isinstance(rec, dict):
            bad.bad(item_file, _line_of(text, item_id), "not_an_object",
                    f"item {item_id!r}: expected an object {{title, ...}}, got {type(rec).__name__}")
            removed[item_id] = "bad_item"
            continue
        row = {"item_id": item_id, **{f: _text(rec.get(f)) for f in ("title", "description", "brand", "categories")}}
        broken = [f for f, v in row.items() if invalid_text(v)]
        if broken:
            line = next((n for n in bad_lines if n >= _line_of(text, item_id)), _line_of(text, item_id))
            bad.bad(item_file, line, "invalid_utf8", f"item {item_id!r} field '{broken[0]}': invalid UTF-8; "
                    "fix the file's encoding or pass --skip-bad-lines")
            removed[item_id] = "bad_item"
            continue
        rows.append({**row, "category": category, "reference_sid": sids.get(item_id)})
    items = pd.DataFrame(rows, columns=["item_id", "title", "description", "brand", "categories", "category",
                                        "reference_sid"])
    if items.empty:
        raise DataError(f"{item_file}: no item records")
    items["title"] = rules.clean_titles(items["title"])
    ok = rules.usable_title(items["title"], min_title_chars)
    dropped[rules.ITEMS_NO_TITLE] = int((~ok).sum())
    if not ok.any():
        raise DataError(f"{item_file}: no items left after the title filter (min_title_chars={min_title_chars})")
    removed.update({i: "no_title" for i in items.loc[~ok, "item_id"]})
    return items[ok].reset_index(drop=True), removed


def _id_list(value: str) -> list[str]:
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"is not a list literal: {value[:80]!r}") from None
    if not isinstance(parsed, (list, tuple)):
        raise ValueError(f"is not a list: {value[:80]!r}")
    return [str(x) for x in parsed]


def read_samples(path: Path, max_history: int, bad: BadLines) -> pd.DataFrame:
    """Every row of train/valid/test.csv; `_row` ("train.csv line 17") names it in later errors.

    Read with the csv module so that a bad row is reported at its physical line
    (quoted titles may span lines) and can be quarantined instead of failing.
    """
    csv.field_size_limit(1 << 28)  # long history-title lists
    frames = []
    for split in SPLITS:
        file = path / f"{split}.csv"
        rows = []
        skipped_before = sum(bad.counts.values())
        # surrogateescape: invalid bytes survive to the field check below, which names line and field
        with open(file, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{file}:1: unreadable header ({exc})") from None
            if not header:
                raise DataError(f"{file}: empty file (no header)")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{file}:1: missing required column(s) {missing} (found {header})")
            col = {name: header.index(name) for name in REQUIRED_COLUMNS}
            width = len(header)
            line = reader.line_num
            while True:
                start = line + 1
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    bad.bad(file, start, "malformed_csv", f"unreadable CSV ({exc})")
                    line = reader.line_num
                    continue
                line = reader.line_num
                raw = ",".join(rec).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue  # blank line
                broken = next((j for j, v in enumerate(rec) if invalid_text(v)), None)
                if broken is not None:
                    name = header[broken] if broken < len(header) else f"#{broken + 1}"
                    bad.bad(file, start, "invalid_utf8", f"field '{name}': invalid UTF-8; fix the file's "
                            "encoding or pass --skip-bad-lines", raw)
                    continue
                if len(rec) != width:
                    bad.bad(file, start, "wrong_field_count", f"expected {width} fields, found {len(rec)}", raw)
                    continue
                user, target = rec[col["user_id"]].strip(), rec[col["item_id"]].strip()
                if not user or not target:
                    name = "user_id" if not user else "item_id"
                    bad.bad(file, start, "missing_field", f"field '{name}' is empty", raw)
                    continue
                try:
                    history = _id_list(rec[col["history_item_id"]])
                except ValueError as exc:
                    bad.bad(file, start, "malformed_history", f"field 'history_item_id' {exc}", raw)
                    continue
                rows.append({"split": split, "user_id": user, "history": history[-max_history:],
                             "target": target, "timestamp": None, "_row": f"{file.name} line {start}"})
        if not rows:
            skipped = sum(bad.counts.values()) - skipped_before
            raise DataError(f"{file}: split '{split}' is empty (no rows" +
                            (f"; {skipped} bad line(s) skipped)" if skipped else ")"))
        frames.append(pd.DataFrame(rows, columns=["split", "user_id", "history", "target", "timestamp", "_row"]))
    return pd.concat(frames, ignore_index=True)


def clean_samples(samples: pd.DataFrame, removed: dict[str, str], dropped: dict) -> pd.DataFrame:
    """The raw readers' sample rules on given samples: a repeated (user, history, target) row keeps
    its first copy; a sample whose target was dropped (no usable title, or a quarantined record) is
    dropped; dropped items are left out of histories, as the raw readers drop their reviews."""
    key = samples["user_id"] + "\x1f" + samples["target"] + "\x1f" + samples["history"].map("\x1e".join)
    dup = key.duplicated(keep="first").to_numpy()
    dropped["samples_duplicate"] = int(dup.sum())
    samples = samples[~dup]
    reason = samples["target"].map(removed)
    dropped["samples_no_title"] = int((reason == "no_title").sum())
    dropped["samples_bad_item"] = int((reason == "bad_item").sum())
    samples = samples[reason.isna().to_numpy()].reset_index(drop=True)
    if removed:
        samples["history"] = samples["history"].map(lambda h: [i for i in h if i not in removed])
    return samples
