"""Test inputs for the alignment stage: a sids artifact from the dataset's reference SIDs
(until the SID stage's artifact is used), a small corpus artifact, and a fast tiny-model config."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sidreasoner_core.artifacts import open_artifact, write_artifact
from sidreasoner_core.dataset import read_items
from sidreasoner_core.sid import SIDS_FILE, parse_sid

SIDS_SCHEMA = pa.schema([("item_id", pa.string()), ("sid", pa.string()), ("codes", pa.list_(pa.int32()))])


def reference_sids_artifact(dataset, out: Path):
    """kind "sids" from items.parquet's reference_sid column."""
    items = read_items(dataset.path)
    items = items[items["reference_sid"].notna()]
    df = pd.DataFrame({"item_id": items["item_id"], "sid": items["reference_sid"],
                       "codes": [list(parse_sid(s)) for s in items["reference_sid"]]})
    with write_artifact(out, kind="sids", config={"levels": 3, "codes_per_level": 256}, parents=[dataset]) as d:
        pq.write_table(pa.Table.from_pandas(df, schema=SIDS_SCHEMA, preserve_index=False), d / SIDS_FILE)
    return open_artifact(out, kind="sids")


def corpus_artifact(dataset, sids, out: Path, n: int = 6):
    """kind "corpus": a few item paragraphs and user narratives (one row per file not ok)."""
    sid_df = pq.read_table(sids.path / SIDS_FILE).to_pandas().head(n + 1)
    items = pd.DataFrame({"item_id": sid_df["item_id"],
                          "paragraph": [f"The item {s} is a sturdy tool kit. {s} suits workshops." for s in sid_df["sid"]],
                          "status": ["ok"] * n + ["failed"]})
    from sidreasoner_core.dataset import read_samples

    sid_of = dict(zip(*[pq.read_table(sids.path / SIDS_FILE).to_pandas()[c] for c in ("item_id", "sid")]))
    samples = pd.concat([read_samples(dataset.path, "train").head(n - 1), read_samples(dataset.path, "valid").head(1)])
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)],
                          "split": ["train"] * (n - 1) + ["valid"],
                          "history": [list(h) for h in samples["history"]],
                          "history_sids": [[sid_of[i] for i in h] for h in samples["history"]],
                          "target": list(samples["target"]), "target_sid": [sid_of[t] for t in samples["target"]],
                          "reasoning": [f"Steady on steel parts. Next: a tool kit by Acme. The user may enjoy it {i}."
                                        for i in range(n)],
                          "narrative": [f"The user bought {s} and then looked for steel parts." for s in sid_df["sid"][:n]],
                          "status": ["ok"] * n})
    with write_artifact(out, kind="corpus", parents=[dataset, sids]) as d:
        items.to_parquet(d / "item_texts.parquet")
        users.to_parquet(d / "user_reasoning.parquet")
    return open_artifact(out, kind="corpus")


def tiny_config(**train) -> dict:
    """An `align` section that trains tiny-qwen3 for a few steps in seconds."""
    opts = {"learning_rate": 5e-3, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
            "gradient_accumulation_steps": 1, "max_steps": 4, "max_length": 256, "eval_strategy": "steps",
            "eval_steps": 2, "warmup_ratio": 0.0, "early_stopping_patience": 2}
    opts.update(train)
    return {"model": "tiny-qwen3", "max_per_task": 6, "eval_max_per_task": 4,
            "gsm8k_eval_n": 2, "gsm8k_max_new_tokens": 8, "gsm8k_batch_size": 2, "train": opts}
