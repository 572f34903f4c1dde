"""Batch scoring: a parquet of histories in, a parquet of recommendations out.

Every row is checked before any decoding (a bad row fails the job at once, naming the file and
row). Work is done in chunks, each written atomically under `<output>.partial/`; a rerun with
the same input and options skips the chunks already there, and the output appears (atomically)
only when every chunk is done.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .recommender import Recommender, RequestError

ITEM = pa.struct([("item_id", pa.string()), ("title", pa.string()), ("sid", pa.string()), ("score", pa.float64())])
ANSWER_FIELDS = [("recommendations", pa.list_(ITEM)), ("reasoning", pa.string())]


class BatchError(ValueError):
    pass


def load_recommender(model_uri: str, tracking_uri: str | None = None) -> Recommender:
    """The Recommender of an MLflow model: `models:/name@alias`, `runs:/...`, s3:// or a local directory."""
    import mlflow

    local = model_uri
    if not Path(model_uri).is_dir():
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=tracking_uri)
    return mlflow.pyfunc.load_model(local).unwrap_python_model().recommender


def _write_atomic(table: pa.Table, path: Path) -> None:
    part = path.with_name(f".{path.name}.part")
    pq.write_table(table, part)
    os.replace(part, path)


def recommend_file(recommender: Recommender, input_path: str | Path, output_path: str | Path, k: int | None = None,
                   mode: str | None = None, chunk_rows: int = 256, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    try:
        table = pq.read_table(input_path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BatchError(f"{input_path}: cannot read as parquet ({exc})") from None
    if "history" not in table.column_names:
        raise BatchError(f"{input_path}: no `history` column (list of item ids per row); columns: {table.column_names}")
    clash = [n for n, _ in ANSWER_FIELDS if n in table.column_names]
    if clash:
        raise BatchError(f"{input_path}: column(s) {clash} would be overwritten by the answer; rename them")
    histories = table.column("history").to_pylist()
    try:
        histories, k, mode = _check_all(recommender, histories, k, mode)
    except RequestError as exc:
        raise BatchError(f"{input_path}: {exc}") from None

    # A chunk directory belongs to one (input, k, mode, chunking); anything else starts afresh.
    key = hashlib.sha256(json.dumps([hashlib.sha256(input_path.read_bytes()).hexdigest(), k, mode, chunk_rows,
                                     len(recommender)]).encode()).hexdigest()[:16]
    partial = output_path.with_name(f"{output_path.name}.partial")
    key_file = partial / "key"
    if partial.exists() and (not key_file.exists() or key_file.read_text(errors="replace").strip() != key):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    starts = range(0, len(histories), chunk_rows)
    reused = 0
    with tqdm(total=len(histories), desc="recommend", unit="history", disable=not progress) as bar:
        for n, start in enumerate(starts):
            path = partial / f"part-{n:05d}.parquet"
            rows = histories[start:start + chunk_rows]
            if path.exists():
                reused += 1
            else:
                ranked, reasoning = recommender.rank(rows, max(k, recommender.config.num_beams), mode)
                answers = {"recommendations": [recommender.items(r, k) for r in ranked], "reasoning": reasoning}
                _write_atomic(pa.table(answers, schema=pa.schema(ANSWER_FIELDS)), path)
            bar.update(len(rows))
    parts = [pq.read_table(partial / f"part-{n:05d}.parquet") for n in range(len(starts))]
    answers = pa.concat_tables(parts) if parts else pa.table({n: pa.array([], t) for n, t in ANSWER_FIELDS})
    out = table
    for name, _ in ANSWER_FIELDS:
        out = out.append_column(name, answers.column(name))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, output_path)
    shutil.rmtree(partial)
    return {"rows": len(histories), "k": k, "mode": mode, "chunks": len(starts), "chunks_reused": reused,
            "output": str(output_path)}


def _check_all(recommender: Recommender, histories, k, mode):
    """`Recommender.check` without its per-request row cap (a file may hold any number of rows)."""
    if not histories:
        raise RequestError("no rows")
    cap = recommender.config.max_batch_rows
    out = []
    for start in range(0, len(histories), cap):
        try:
            chunk, k, mode = recommender.check(histories[start:start + cap], k, mode)
        except RequestError as exc:
            raise RequestError(_shift_row(str(exc), start)) from None
        out += chunk
    return out, k, mode


def _shift_row(message: str, offset: int) -> str:
    import re

    return re.sub(r"^row (\d+)", lambda m: f"row {int(m.group(1)) + offset}", message)
