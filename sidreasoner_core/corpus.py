"""The corpus artifact (kind "corpus"): tables later stages read (alignment tasks 7-8,
cold-start reasoning)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KIND = "corpus"
ITEM_TEXTS_FILE = "item_texts.parquet"
USER_REASONING_FILE = "user_reasoning.parquet"
FAILED_FILE = "failed.jsonl"
USAGE_FILE = "usage.json"
PROMPTS_FILE = "prompts.json"
CACHE_DIR = "cache"

ITEM_TEXTS_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("sid", pa.string()),
    ("analysis", pa.string()),    # JSON: description, use_cases, audience, features, keywords
    ("paragraph", pa.string()),   # one paragraph, the item named only by its SID (null when failed)
    ("status", pa.string()),      # ok | failed
    ("attempts", pa.int32()),     # teacher calls made for this record
    ("error", pa.string()),
])

USER_REASONING_SCHEMA = pa.schema([
    ("sample_id", pa.string()),   # "{split}:{user_id}:{k}", k = the sample's rank among the user's samples of that split
    ("split", pa.string()),
    ("user_id", pa.string()),
    ("position", pa.int32()),     # k above
    ("history", pa.list_(pa.string())),       # item ids, oldest first (as in samples.parquet)
    ("history_sids", pa.list_(pa.string())),
    ("target", pa.string()),      # item id
    ("target_sid", pa.string()),
    ("reasoning", pa.string()),   # first-person, SIDs only, never names the target; ends open
    ("narrative", pa.string()),   # recites the SID history, weaves in the reasoning
    ("status", pa.string()),
    ("attempts", pa.int32()),
    ("error", pa.string()),
])


def write(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False), path)


def read_item_texts(corpus_dir: str | Path, ok_only: bool = True) -> pd.DataFrame:
    df = pq.read_table(Path(corpus_dir) / ITEM_TEXTS_FILE).to_pandas()
    return df[df["status"] == "ok"].reset_index(drop=True) if ok_only else df


def read_user_reasoning(corpus_dir: str | Path, ok_only: bool = True) -> pd.DataFrame:
    df = pq.read_table(Path(corpus_dir) / USER_REASONING_FILE).to_pandas()
    for col in ("history", "history_sids"):
        df[col] = df[col].map(list)
    return df[df["status"] == "ok"].reset_index(drop=True) if ok_only else df


def usable_traces(df: pd.DataFrame) -> pd.DataFrame:
    """The user reasoning rows a training stage may learn from: status "ok", a train-split sample (never a
    validation or test target) and a non-empty trace (columns missing from a hand-made table are not checked)."""
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    if "split" in df.columns:
        df = df[df["split"] == "train"]
    return df[df["reasoning"].fillna("").str.strip() != ""]
