"""Evaluation step 2, decode: rank the catalogue for each sample in the configured modes
(paper §4.1.1 full ranking; thinking mode and best-of-N of paper Figure 4).

- direct: constrained beam search over SIDs right after the prompt;
- thinking: greedy reasoning until `</think>` (closed by force at the budget), then the same search;
  with `reasoning_beams` > 1, the best traces of a beam search, ranked by trace + SID log-probability;
  with `reasoning_samples` K > 0, K sampled traces, ranked by the mean of p(SID | trace);
- best-of-N: N sampled reasoning traces per sample, each followed by the search.
Modes run in this order so the sampled ones draw the same random numbers run after run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..decoding.constrained import rank_sids
from ..decoding.thinking import Reasoning, generate_reasoning, think_then_rank
from ..metrics import target_rank
from ..prompts import ranking_prompts
from .config import EvaluateConfig
from .load import EvalData, EvalModel

Ranked = list[tuple[str, float]]   # (SID, score), best first


@dataclass
class Decoded:
    n_direct: int
    n_think: int
    direct: list[Ranked] | None = None                     # per sample, first n_direct
    thinking: list[tuple[Reasoning, Ranked]] | None = None  # per sample, first n_think
    best_of_n: list[tuple[int, int, Reasoning, Ranked]] = field(default_factory=list)  # (sample, trace, ...)

    def reasoning_lengths(self) -> list[int]:
        return [t.tokens for t, _ in self.thinking or []] + [t.tokens for _, _, t, _ in self.best_of_n]


def sample_counts(config: EvaluateConfig, n_samples: int) -> tuple[int, int]:
    """(samples decoded in direct mode, in thinking mode)."""
    n_direct = min(n_samples, config.max_samples or n_samples)
    n_think = n_direct if config.thinking_samples < 0 else min(config.thinking_samples, n_samples)
    return n_direct, n_think


def decode(config: EvaluateConfig, data: EvalData, m: EvalModel, progress: bool = True) -> Decoded:
    n_direct, n_think = sample_counts(config, len(data.samples))
    out = Decoded(n_direct, n_think)
    search = dict(num_beams=config.num_beams, batch_size=config.batch_size, progress=progress)
    reason = dict(max_new_tokens=config.max_reasoning_tokens, batch_size=config.thinking_batch_size, progress=progress,
                  max_sid_tokens=config.max_reasoning_sid_tokens)
    if config.direct:
        out.direct = rank_sids(m.model, m.tokenizer, ranking_prompts(m.tokenizer, data.history_sids[:n_direct], False),
                               m.trie, desc="direct", **search)
    if n_think > 0:
        out.thinking = think_then_rank(m.model, m.tokenizer, ranking_prompts(m.tokenizer, data.history_sids[:n_think], True),
                                       m.trie, config.num_beams, config.reasoning_beams, config.batch_size,
                                       config.max_reasoning_tokens, config.thinking_batch_size,
                                       config.max_reasoning_sid_tokens, progress,
                                       reasoning_samples=config.reasoning_samples, temperature=config.temperature,
                                       top_p=config.top_p)
    if config.best_of_n > 0:
        n_bon = min(config.best_of_n_samples, len(data.samples))
        traces = generate_reasoning(m.model, m.tokenizer, ranking_prompts(m.tokenizer, data.history_sids[:n_bon], True),
                                    num_return_sequences=config.best_of_n, do_sample=True,
                                    temperature=config.temperature, top_p=config.top_p, desc="best-of-N", **reason)
        flat = [(i, j, t) for i, ts in enumerate(traces) for j, t in enumerate(ts)]
        ranked = rank_sids(m.model, m.tokenizer, [t.context for _, _, t in flat], m.trie, desc="best-of-N SID",
                           **search)
        out.best_of_n = [(i, j, t, r) for (i, j, t), r in zip(flat, ranked)]
    return out


def prediction_row(mode: str, data: EvalData, sample: int, ranked: Ranked, trace_no: int = 0,
                   trace: Reasoning | None = None) -> dict:
    """One row of predictions.parquet (`PREDICTION_SCHEMA`)."""
    df = data.samples
    target = df["target"].iloc[sample]
    tsid = data.table.sid_by_item[target]
    sids = [s for s, _ in ranked]
    return {"mode": mode, "sample": int(sample), "trace": trace_no, "user_id": df["user_id"].iloc[sample],
            "target": target, "target_sid": tsid, "rank": target_rank(sids, tsid), "ranked_sids": sids,
            "ranked_items": [data.table.item_by_sid[s] for s in sids], "scores": [float(x) for _, x in ranked],
            "reasoning": trace.text if trace else None, "reasoning_tokens": trace.tokens if trace else 0,
            "forced_close": trace.forced if trace else False}


def prediction_rows(decoded: Decoded, data: EvalData) -> tuple[list[dict], list[dict]]:
    """(direct + thinking rows, best-of-N rows)."""
    rows = [prediction_row("direct", data, i, r) for i, r in enumerate(decoded.direct or [])]
    rows += [prediction_row("thinking", data, i, r, 0, t) for i, (t, r) in enumerate(decoded.thinking or [])]
    bon = [prediction_row("best_of_n", data, i, r, j, t) for i, j, t, r in decoded.best_of_n]
    return rows, bon
