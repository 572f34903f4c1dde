"""Reader for the processed CSV format (train/valid/test.csv + item.json [+ index.json]).

It keeps the given split and, when `index.json` is present, its SIDs as `reference_sid`.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd

from .errors import BadLines, DataError
from .schema import SPLITS

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


def _id_list(value, file: Path, row: int) -> list[str]:
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        raise DataError(f"{file}: row {row}: field 'history_item_id' is not a list literal: {str(value)[:80]!r}") from None
    if not isinstance(parsed, (list, tuple)):
        raise DataError(f"{file}: row {row}: field 'history_item_id' is not a list: {str(value)[:80]!r}")
    return [str(x) for x in parsed]


def read_samples(path: Path, max_history: int, bad: BadLines) -> pd.DataFrame:
    frames = []
    for split in SPLITS:
        file = path / f"{split}.csv"
        try:
            df = pd.read_csv(file, dtype=str, keep_default_na=False)
        except pd.errors.ParserError as exc:
            raise DataError(f"{file}: {exc}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{file}: missing required column(s) {missing}")
        rows = []
        for i, rec in enumerate(df.itertuples(index=False)):
            row = i + 2  # 1-based, after the header
            try:
                history = _id_list(rec.history_item_id, file, row)
            except DataError as exc:
                bad.bad(file, row, "malformed_history", str(exc))
                continue
            if not str(rec.item_id).strip():
                bad.bad(file, row, "missing_target", f"row {row}: field 'item_id' is empty")
                continue
            rows.append({"split": split, "user_id": str(rec.user_id), "history": history[-max_history:],
                         "target": str(rec.item_id).strip(), "timestamp": None, "_row": f"{file.name} row {row}"})
        frames.append(pd.DataFrame(rows, columns=["split", "user_id", "history", "target", "timestamp", "_row"]))
    return pd.concat(frames, ignore_index=True)
