"""Reader for the processed CSV format (train/valid/test.csv + item.json [+ index.json]).

It keeps the given split and, when `index.json` is present, its SIDs as `reference_sid`.
"""
from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pandas as pd

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


def read_items(path: Path, category: str) -> pd.DataFrame:
    item_file = path / "item.json"
    try:
        meta = json.loads(item_file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{item_file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    sids = {}
    index_file = path / "index.json"
    if index_file.is_file():
        try:
            index = json.loads(index_file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{index_file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        sids = {str(k): "".join(v) for k, v in index.items()}
    rows = []
    for item_id, rec in meta.items():
        if not isinstance(rec, dict) or "title" not in rec:
            raise DataError(f"{item_file}: item {item_id!r} has no field 'title'")
        rows.append({
            "item_id": str(item_id),
            "title": _text(rec.get("title")),
            "description": _text(rec.get("description")),
            "brand": _text(rec.get("brand")),
            "categories": _text(rec.get("categories")),
            "category": category,
            "reference_sid": sids.get(str(item_id)),
        })
    return pd.DataFrame(rows)


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
        with open(file, newline="", encoding="utf-8", errors="strict") as fh:
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
                except UnicodeDecodeError as exc:  # the text stream cannot go on past this
                    raise DataError(f"{file}:{start}: not UTF-8 ({exc})") from None
                line = reader.line_num
                raw = ",".join(rec)
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue  # blank line
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
        frames.append(pd.DataFrame(rows, columns=["split", "user_id", "history", "target", "timestamp", "_row"]))
    return pd.concat(frames, ignore_index=True)
