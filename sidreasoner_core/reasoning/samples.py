"""Rows for the reasoning stages: the SID-history prompt and the target SID of each sample.

A row is `{"prompt": [chat messages], "target_sid": str, "user_id": str}` (TRL's conversational
prompt format); cold-start rows add `"completion": [assistant message]`.
"""
from __future__ import annotations

import logging

import pandas as pd

from .. import prompts
from ..corpus import usable_traces
from .config import PromptConfig

log = logging.getLogger(__name__)

class ReasoningDataError(ValueError):
    pass


def prompt_messages(history_sids: list[str], thinking: bool = True) -> list[dict]:
    """The SID-history -> next-SID prompt (task 5, paper Appendix B) with the thinking instruction of paper §3.3.1,
    worded by the shared prompt module so evaluation sees the same text."""
    return [{"role": "user", "content": prompts.sid_history_prompt(history_sids, thinking=thinking)}]


def sid_rows(samples: pd.DataFrame, sid_by_item: dict[str, str], prompt: PromptConfig,
             max_samples: int | None = None, seed: int = 0, source: str = "samples") -> list[dict]:
    """One row per sample whose history and target all have SIDs (a missing SID is an error)."""
    if max_samples is not None and len(samples) > max_samples:
        samples = samples.sample(n=max_samples, random_state=seed).sort_index()
    rows = []
    for idx, rec in samples.iterrows():
        history = list(rec["history"])[-prompt.max_history:]
        missing = [i for i in [*history, rec["target"]] if i not in sid_by_item]
        if missing:
            raise ReasoningDataError(f"{source}: row {idx} (user {rec['user_id']!r}): item {missing[0]!r} has no SID")
        rows.append({
            "prompt": prompt_messages([sid_by_item[i] for i in history], thinking=prompt.thinking),
            "target_sid": sid_by_item[rec["target"]],
            "user_id": str(rec["user_id"]),
        })
    if not rows:
        raise ReasoningDataError(f"{source}: no samples")
    return rows


def coldstart_rows(reasoning: pd.DataFrame, sid_by_item: dict[str, str], prompt: PromptConfig,
                   max_samples: int | None = None, seed: int = 0, source: str = "user_reasoning",
                   max_reasoning_words: int | None = None) -> list[dict]:
    """Prompt + `<think>\\n{reasoning}\\n</think>\\n\\n{SID}` completion for every usable trace."""
    for col in ("history", "target", "reasoning"):
        if col not in reasoning.columns:
            raise ReasoningDataError(f"{source}: column {col!r} missing (have {list(reasoning.columns)})")
    ok = usable_traces(reasoning)  # cold-start learns from training samples only
    if ok.empty:
        raise ReasoningDataError(f"{source}: no reasoning traces with status 'ok'")
    if "user_id" not in ok.columns:
        ok = ok.assign(user_id="")
    if max_samples is not None and len(ok) > max_samples:
        ok = ok.sample(n=max_samples, random_state=seed).sort_index()
    rows = sid_rows(ok, sid_by_item, prompt, None, seed, source)
    for row, reasoning_text in zip(rows, ok["reasoning"]):
        row["completion"] = [{"role": "assistant",
                               "content": prompts.thinking_response(prompts.shorten(reasoning_text, max_reasoning_words),
                                                                    row["target_sid"])}]
    return rows
