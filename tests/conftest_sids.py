"""Fixtures and helpers for the SID stage tests (imported by tests/test_sids_*.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sidreasoner_core.artifacts import open_artifact, write_artifact
from sidreasoner_core.dataset import ITEMS_FILE, ITEMS_SCHEMA, SAMPLES_FILE, SAMPLES_SCHEMA, write_table

# Small, fast settings: short token limit and few epochs keep the real encoder + RQ-VAE in seconds.
FAST = {"max_seq_length": 32, "epochs": 8, "encode_batch_size": 128, "cache_embeddings": False}


def make_dataset(out: Path, items: list[dict]):
    """A dataset artifact holding just `items` (the SID stage reads only items.parquet)."""
    rows = [{"description": "", "brand": "", "categories": "", "category": "Test", "reference_sid": None, **it}
            for it in items]
    with write_artifact(out, kind="dataset", config={}) as d:
        write_table(pd.DataFrame(rows), ITEMS_SCHEMA, d / ITEMS_FILE)
        write_table(pd.DataFrame(columns=SAMPLES_SCHEMA.names), SAMPLES_SCHEMA, d / SAMPLES_FILE)
    return open_artifact(out, kind="dataset")


@pytest.fixture(scope="session")
def sample_sids(sample_dataset, tmp_path_factory):
    """The stage run once on the shipped sample with the real default encoder."""
    from sidreasoner_core.sids.config import SidsConfig
    from sidreasoner_core.sids.stage import run

    return run(SidsConfig(**FAST), sample_dataset, tmp_path_factory.mktemp("sids") / "sids", progress=False)


@pytest.fixture(scope="session")
def sample_embeddings(sample_sids) -> str:
    """The sample's real embeddings (.npy, item order), for runs that skip the encoder."""
    return str(sample_sids.path / "embeddings.npy")
