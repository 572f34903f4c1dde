"""The data stage's output tables: the contract every later stage reads."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ITEMS_FILE = "items.parquet"
SAMPLES_FILE = "samples.parquet"
STATS_FILE = "stats.json"
QUARANTINE_FILE = "quarantine.jsonl"
KIND = "dataset"
SPLITS = ("train", "valid", "test")

ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("brand", pa.string()),
    ("categories", pa.string()),
    ("category", pa.string()),          # the dataset's category name (e.g. Industrial_and_Scientific)
    ("reference_sid", pa.string()),     # SID from a given index (processed format), else null
])

SAMPLES_SCHEMA = pa.schema([
    ("split", pa.string()),
    ("user_id", pa.string()),
    ("history", pa.list_(pa.string())),  # previous <= max_history item ids, oldest first
    ("target", pa.string()),
    ("timestamp", pa.int64()),           # target's unix time in seconds, null when unknown
])


def write_table(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    # no pandas metadata: the file is plain Arrow types whatever dtypes the frame had (Arrow-backed or not)
    pq.write_table(table.replace_schema_metadata(None), path)


def read_items(dataset_dir: Path) -> pd.DataFrame:
    return pq.read_table(Path(dataset_dir) / ITEMS_FILE).to_pandas()


def item_titles(items: pd.DataFrame) -> dict[str, str]:
    """item id -> title ("" when missing) of an items table."""
    return dict(zip(items["item_id"].astype(str), items["title"].fillna("").astype(str)))


def read_samples(dataset_dir: Path, split: str | None = None) -> pd.DataFrame:
    df = pq.read_table(Path(dataset_dir) / SAMPLES_FILE).to_pandas()
    df["history"] = df["history"].map(list)
    if split is not None:
        df = df[df["split"] == split].reset_index(drop=True)
    return df
