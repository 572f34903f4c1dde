"""Cold-start reasoning activation (paper §3.3.1): one epoch of SFT on reason-then-SID responses.

The training itself is the shared SFT machinery (`training.sft.train_sft`: TRL SFTTrainer, loss on
the assistant response only, resumable checkpoints, ZeRO launch on GPUs); this module only turns
reasoning traces into its records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import prompts
from ..corpus import USER_REASONING_FILE, read_user_reasoning
from .config import ColdStartConfig
from .samples import ReasoningDataError, coldstart_rows, sid_rows

TASK = "coldstart_reasoning"
SELF_TRACE_TASK = "self_trace_answer"
DIRECT_TASK = "direct_answer"


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


def self_trace_records(model, tokenizer, reasoning: pd.DataFrame, sid_by_item: dict[str, str], cfg: ColdStartConfig,
                       source: str = "user_reasoning") -> tuple[list[dict], float]:
    """The model's own greedy trace for each training sample (as thinking mode writes it at test time),
    as records whose completion is trace + target SID with the trace given (`completion_context`), so the
    SFT trains the SID alone; and the share of traces the model closed itself. Every row of the reasoning
    table serves, whatever its teacher status: only its history and target are used."""
    from ..decoding.thinking import generate_reasoning

    st = cfg.self_traces
    rows = sid_rows(reasoning, sid_by_item, cfg.prompt, st.max_samples, cfg.seed, source)
    texts = [prompts.chat_prompt(tokenizer, r["prompt"][0]["content"]) for r in rows]
    traces = generate_reasoning(model, tokenizer, texts, st.max_reasoning_tokens, st.batch_size,
                                desc="own reasoning", max_sid_tokens=st.max_reasoning_sid_tokens)
    out = []
    for row, (trace,) in zip(rows, traces):
        out.append({"task": SELF_TRACE_TASK, "prompt": row["prompt"],
                    "completion": [{"role": "assistant", "content": prompts.thinking_response(trace.text,
                                                                                            row["target_sid"])}],
                    "completion_context": prompts.thinking_response(trace.text, "")})
    if st.direct_rows:  # the same samples without the thinking instruction, answered by the bare SID (task 5)
        direct = sid_rows(reasoning, sid_by_item, cfg.prompt.model_copy(update={"thinking": False}), st.max_samples,
                          cfg.seed, source)
        out += [{"task": DIRECT_TASK, "prompt": row["prompt"],
                 "completion": [{"role": "assistant", "content": row["target_sid"]}]} for row in direct]
    closed = sum(not t.forced for (t,) in traces) / len(traces)
    return out, closed


def train(cfg: ColdStartConfig, model_ref: str, recs: list[dict], work_dir: Path,
          sid_tokens: Sequence[str] | None = None, callbacks: Sequence = (), checkpoint_store=None):
    """Run (or resume) the SFT; returns the `training.sft.SFTResult`."""
    from ..training.sft import train_sft

    return train_sft(model_ref, recs, None, cfg.train, work_dir, sid_tokens=sid_tokens, callbacks=callbacks,
                     checkpoint_store=checkpoint_store)


def train_on_own_traces(cfg: ColdStartConfig, model_ref: str, recs: list[dict], work_dir: Path, checkpoint_store=None,
                        callbacks=()):
    """The second SFT of `self_traces` (its own options and checkpoints); returns the `SFTResult`."""
    from ..training.sft import train_sft

    return train_sft(model_ref, recs, None, cfg.self_traces.train, work_dir, checkpoint_store=checkpoint_store,
                     callbacks=callbacks)
