"""Inputs of the evaluation tests: a collision-free sids artifact from the sample's reference SIDs,
the tiny model with SID tokens added (saved once per session), a tiny baselines config."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sidreasoner_core.artifacts import open_artifact, write_artifact
from sidreasoner_core.dataset import read_items
from sidreasoner_core.sid import SIDS_FILE, format_sid, parse_sid

SIDS_SCHEMA = pa.schema([("item_id", pa.string()), ("sid", pa.string()), ("codes", pa.list_(pa.int32()))])
TINY_BASELINES = {"sasrec": {"hidden": 16, "blocks": 1, "max_epochs": 3, "patience": 2, "batch_size": 64}}


def unique_reference_sids(dataset) -> dict[str, str]:
    """Reference SIDs with collisions moved to a free last-level code of the same prefix."""
    items = read_items(dataset.path)
    items = items[items["reference_sid"].notna()]
    taken, out = set(), {}
    for item, sid in zip(items["item_id"], items["reference_sid"]):
        codes = list(parse_sid(sid))
        while format_sid(codes) in taken:
            codes[-1] = (codes[-1] + 1) % 256
        taken.add(format_sid(codes))
        out[item] = format_sid(codes)
    return out


def write_sids(sid_by_item: dict[str, str], out: Path, parents=()):
    df = pd.DataFrame({"item_id": list(sid_by_item), "sid": list(sid_by_item.values()),
                       "codes": [list(parse_sid(s)) for s in sid_by_item.values()]})
    with write_artifact(out, kind="sids", config={"levels": 3, "codes_per_level": 256}, parents=list(parents)) as d:
        pq.write_table(pa.Table.from_pandas(df, schema=SIDS_SCHEMA, preserve_index=False), d / SIDS_FILE)
    return open_artifact(out, kind="sids")


@pytest.fixture(scope="session")
def eval_sids(sample_dataset, tmp_path_factory):
    return write_sids(unique_reference_sids(sample_dataset), tmp_path_factory.mktemp("sids") / "sids", [sample_dataset])


@pytest.fixture(scope="session")
def eval_model_dir(tmp_path_factory):
    """tiny-qwen3 whose tokenizer holds all 3x256 SID tokens."""
    from sidreasoner_core.models import add_sid_tokens, load_model
    from sidreasoner_core.sid import vocabulary

    model, tok = load_model("tiny-qwen3")
    add_sid_tokens(tok, model, vocabulary(3, 256))
    path = tmp_path_factory.mktemp("model") / "tiny-sid"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """Small models run far faster on one thread on this shared 2-core box (no OpenMP spinning)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
