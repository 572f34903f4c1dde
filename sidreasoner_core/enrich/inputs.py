"""Read the stage's inputs (dataset + SID table) into prompt-ready records."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..dataset import read_items, read_samples
from ..sid import SIDS_FILE, read_sid_table
from .offline import clean_description
from .prompts import ItemInfo


class EnrichError(ValueError):
    """Bad input; the message names the file and the record."""


def load(dataset_dir: str | Path, sids_dir: str | Path) -> tuple[dict[str, ItemInfo], pd.DataFrame]:
    items = read_items(dataset_dir)
    sid_by_item = read_sid_table(sids_dir).sid_by_item
    missing = [i for i in items["item_id"] if i not in sid_by_item]
    if missing:
        raise EnrichError(f"{Path(sids_dir) / SIDS_FILE}: {len(missing)} dataset item(s) have no SID "
                          f"(first: item {missing[0]!r})")
    info = {
        r.item_id: ItemInfo(item_id=r.item_id, sid=sid_by_item[r.item_id], title=str(r.title or "").strip(),
                            brand=str(r.brand or "").strip(), category=str(r.category or "").strip(),
                            description=clean_description(r.description))
        for r in items.itertuples(index=False)
    }
    return info, read_samples(dataset_dir)


def with_sample_ids(samples: pd.DataFrame) -> pd.DataFrame:
    """Stable sample ids: split, user and the sample's rank among that user's samples in the split."""
    df = samples.copy()
    df["position"] = df.groupby(["split", "user_id"], sort=False).cumcount().astype(int)
    df["sample_id"] = df["split"] + ":" + df["user_id"].astype(str) + ":" + df["position"].astype(str)
    return df
