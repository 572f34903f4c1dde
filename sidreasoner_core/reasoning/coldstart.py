"""Cold-start reasoning activation (paper §3.3.1): one epoch of SFT on reason-then-SID responses.

The training itself is the shared SFT machinery (`training.sft.train_sft`: TRL SFTTrainer, loss on
the assistant response only, resumable checkpoints, ZeRO launch on GPUs); this module only turns
reasoning traces into its records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..corpus import USER_REASONING_FILE, read_user_reasoning
from .config import ColdStartConfig
from .samples import ReasoningDataError, coldstart_rows

TASK = "coldstart_reasoning"


def read_reasoning(corpus_dir: str | Path) -> pd.DataFrame:
    """The corpus's user-centric reasoning traces (all rows; `coldstart_rows` keeps the usable ones)."""
    path = Path(corpus_dir) / USER_REASONING_FILE
    if not path.is_file():
        raise ReasoningDataError(f"{path}: no user reasoning table in the corpus")
    return read_user_reasoning(corpus_dir, ok_only=False)


def records(reasoning: pd.DataFrame, sid_by_item: dict[str, str], cfg: ColdStartConfig,
            source: str = "user_reasoning") -> list[dict]:
    """`{"task", "prompt", "completion"}` records for `train_sft`."""
    rows = coldstart_rows(reasoning, sid_by_item, cfg.prompt, cfg.max_samples, cfg.seed, source,
                          cfg.max_reasoning_words)
    return [{"task": TASK, "prompt": r["prompt"], "completion": r["completion"]} for r in rows]


def train(cfg: ColdStartConfig, model_ref: str, recs: list[dict], work_dir: Path,
          sid_tokens: Sequence[str] | None = None, callbacks: Sequence = (), checkpoint_store=None):
    """Run (or resume) the SFT; returns the `training.sft.SFTResult`."""
    from ..training.sft import train_sft

    return train_sft(model_ref, recs, None, cfg.train, work_dir, sid_tokens=sid_tokens, callbacks=callbacks,
                     checkpoint_store=checkpoint_store)
