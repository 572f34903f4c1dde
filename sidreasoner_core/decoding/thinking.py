"""Thinking mode: reasoning generated up to `</think>` (closed by force at a length limit), after
which the constrained SID search continues from `</think>\\n\\n` (paper §3.3.1, §4.1.1).

SID tokens inside the reasoning can be bounded (`max_sid_tokens`; 0 bans them): a small model
otherwise falls into loops of SID tokens that fill the whole budget."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..prompts import THINK_CLOSE, THINK_OPEN
from ..sid import TOKEN_RE
from .constrained import encode_left_padded, pad_left, ranked_leaves, search_from


@dataclass
class Reasoning:
    text: str        # the reasoning between <think> and </think>
    tokens: int      # reasoning tokens generated
    forced: bool     # True when </think> was not produced (length limit or end of turn) and was added
    context: str     # prompt + <think>..</think>\n\n: where the SID search continues
    logprob: float = 0.0  # log-probability of the trace (with reasoning beams; 0 for greedy or sampled)


def sid_token_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's SID tokens (`<a_12>`, ...)."""
    return sorted(i for t, i in tokenizer.get_vocab().items() if TOKEN_RE.fullmatch(t))


class SIDTokenBudget:
    """Logits processor: once a row has generated `max_tokens` SID tokens after position `start`,
    no further SID token can be chosen in that row."""

    def __init__(self, sid_ids: Sequence[int], max_tokens: int, start: int):
        self.sid_ids, self.max_tokens, self.start = torch.tensor(list(sid_ids)), max_tokens, start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ids = self.sid_ids.to(input_ids.device)
        used = torch.isin(input_ids[:, self.start:], ids).sum(dim=1)
        full = (used >= self.max_tokens).nonzero(as_tuple=True)[0]
        if len(full):
            scores[full.unsqueeze(1), ids.unsqueeze(0)] = float("-inf")
        return scores


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def reasoning_context(prompt: str, reasoning: str) -> str:
    """The text the SID follows, in the training format of `prompts.thinking_response`."""
    return f"{prompt}{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n"


@torch.no_grad()
def generate_reasoning(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8,
                       num_return_sequences: int = 1, do_sample: bool = False, temperature: float = 1.0,
                       top_p: float = 1.0, desc: str = "reasoning", progress: bool = True,
                       max_sid_tokens: int | None = None, num_beams: int = 1) -> list[list[Reasoning]]:
    """Reasoning traces for each templated prompt (greedy, sampled for best-of-N, or the
    `num_return_sequences` best of a beam search with their log-probabilities); at most
    `max_sid_tokens` SID tokens per trace (None: unbounded).

    The response is opened with `<think>\\n` so even an un-aligned model reasons; generation stops
    at `</think>` (a token or, for tokenizers without it, a stop string) or the end-of-turn token.
    """
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    close_id = _single_token_id(tokenizer, THINK_CLOSE)
    stops = [i for i in {tokenizer.eos_token_id, close_id} if i is not None]
    kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=stops, do_sample=do_sample)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if num_beams > 1:  # summed log-probabilities (no length penalty), so traces compare with their SIDs;
        # a beam may only end at </think>: ending the turn early is a cheap way for a beam to stay likely
        kwargs.update(num_beams=num_beams, length_penalty=0.0, early_stopping=True, output_scores=True,
                      return_dict_in_generate=True)
        if close_id is not None and tokenizer.eos_token_id is not None:
            kwargs.update(eos_token_id=close_id, suppress_tokens=[tokenizer.eos_token_id])
    if close_id is None:
        kwargs.update(stop_strings=[THINK_CLOSE], tokenizer=tokenizer)
    sid_ids = sid_token_ids(tokenizer) if max_sid_tokens is not None else []
    heads = [f"{p}{THINK_OPEN}\n" for p in prompts]
    out: list[list[Reasoning]] = []
    for start in tqdm(range(0, len(heads), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = heads[start:start + batch_size]
        input_ids, mask = encode_left_padded(tokenizer, chunk, device)
        budget = [SIDTokenBudget(sid_ids, max_sid_tokens, input_ids.size(1))] if sid_ids else []
        gen = model.generate(input_ids=input_ids, attention_mask=mask, logits_processor=LogitsProcessorList(budget),
                             **kwargs)
        seqs = (gen.sequences if num_beams > 1 else gen)[:, input_ids.size(1):]
        logprobs = gen.sequences_scores.tolist() if num_beams > 1 else [0.0] * len(seqs)
        for i, prompt in enumerate(prompts[start:start + batch_size]):
            traces = []
            rows = range(i * num_return_sequences, (i + 1) * num_return_sequences)
            for row, logprob in zip(seqs[rows.start:rows.stop].tolist(), logprobs[rows.start:rows.stop]):
                traces.append(_trace(prompt, row, close_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer,
                                     float(logprob)))
            out.append(traces)
    return out


def think_then_rank(model, tokenizer, prompts: Sequence[str], trie, num_beams: int, reasoning_beams: int = 1,
                    batch_size: int = 8, max_new_tokens: int = 64, thinking_batch_size: int = 8,
                    max_sid_tokens: int | None = None, progress: bool = True, desc: str = "thinking",
                    reasoning_samples: int = 0, temperature: float = 1.0, top_p: float = 1.0
                    ) -> list[tuple[Reasoning, list[tuple[str, float]]]]:
    """Thinking mode: reasoning, then the constrained SID search after `</think>`.

    - One reasoning beam, no samples: the paper's greedy reasoning (§3.3.1), `greedy_think_then_rank`.
    - `reasoning_beams` B > 1: the B best traces of a beam search, each followed by the SID search;
      the catalogue is ranked by the joint log-probability of trace + SID (best trace per SID).
    - `reasoning_samples` K > 0: K traces sampled at `temperature`, each followed by the SID search;
      the catalogue is ranked by log of the mean of p(SID | trace) over the K traces, a Monte Carlo
      estimate of p(SID | history) with the reasoning as a latent variable. Greedy reasoning picks
      the single likeliest guess of the next item's type and brand, which on a flat distribution is
      the generic one; the samples spread the top 10 over the guesses the model actually holds.
    The trace returned is the one behind the top SID."""
    from .constrained import rank_sids

    if reasoning_samples > 0 and reasoning_beams > 1:
        raise ValueError("reasoning_samples and reasoning_beams > 1 are exclusive: pick one")
    if reasoning_samples == 0 and reasoning_beams == 1 and _single_token_id(tokenizer, THINK_CLOSE) is not None:
        return greedy_think_then_rank(model, tokenizer, prompts, trie, num_beams, max_new_tokens,
                                      thinking_batch_size, max_sid_tokens, progress, desc)
    per_prompt = reasoning_samples or reasoning_beams
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if reasoning_samples else \
        dict(num_beams=reasoning_beams)
    traces = generate_reasoning(model, tokenizer, prompts, max_new_tokens, thinking_batch_size,
                                num_return_sequences=per_prompt, desc=desc, progress=progress,
                                max_sid_tokens=max_sid_tokens, **sampling)
    flat = [t for ts in traces for t in ts]
    ranked = rank_sids(model, tokenizer, [t.context for t in flat], trie, num_beams, batch_size,
                       desc=f"{desc} SID", progress=progress)
    merge = merge_mean_probability if reasoning_samples else merge_best_joint
    out, k = [], 0
    for ts in traces:
        merged = merge(ts, ranked[k:k + len(ts)], num_beams)
        k += len(ts)
        top = ts[merged[0][2]] if merged else ts[0]
        out.append((top, [(sid, score) for sid, score, _ in merged]))
    return out


def merge_best_joint(traces: Sequence[Reasoning], ranked: Sequence[Sequence[tuple[str, float]]], k: int
                     ) -> list[tuple[str, float, int]]:
    """(SID, best log p(trace) + log p(SID | trace), index of that trace), top `k`."""
    best: dict[str, tuple[float, int]] = {}
    for j, (trace, sids) in enumerate(zip(traces, ranked)):
        for sid, score in sids:
            total = trace.logprob + score
            if sid not in best or total > best[sid][0]:
                best[sid] = (total, j)
    return sorted(((s, x, j) for s, (x, j) in best.items()), key=lambda r: -r[1])[:k]


def merge_mean_probability(traces: Sequence[Reasoning], ranked: Sequence[Sequence[tuple[str, float]]], k: int
                           ) -> list[tuple[str, float, int]]:
    """(SID, log of the mean over the sampled traces of p(SID | trace), the trace giving it the most),
    top `k`. A SID outside a trace's beams counts as probability 0 under that trace."""
    scores: dict[str, list[float]] = {}
    best: dict[str, tuple[float, int]] = {}
    for j, sids in enumerate(ranked):
        for sid, score in sids:
            scores.setdefault(sid, []).append(score)
            if sid not in best or score > best[sid][0]:
                best[sid] = (score, j)
    log_n = math.log(max(len(traces), 1))
    merged = [(s, _logsumexp(xs) - log_n, best[s][1]) for s, xs in scores.items()]
    return sorted(merged, key=lambda r: -r[1])[:k]


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


@torch.no_grad()
def greedy_think_then_rank(model, tokenizer, prompts: Sequence[str], trie, num_beams: int, max_new_tokens: int,
                           batch_size: int = 64, max_sid_tokens: int | None = None, progress: bool = True,
                           desc: str = "thinking") -> list[tuple[Reasoning, list[tuple[str, float]]]]:
    """Greedy reasoning, then the SID search continuing from the reasoning's own KV cache.

    The same traces as `generate_reasoning` (greedy), and the SID search runs after the tokens the
    model generated plus `</think>\n\n` (`\n</think>\n\n` where the trace was closed by force),
    instead of after the re-tokenized trace text: the context is not encoded a second time, which was
    a third of the thinking mode's time. A row that ended its turn without `</think>` drops that token
    (its mask is 0), as the text context does. Prompts run sorted by length (less padding)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    trie = trie.to(device)
    close_id, eos_id, pad_id = _single_token_id(tokenizer, THINK_CLOSE), tokenizer.eos_token_id, tokenizer.pad_token_id
    # an end of turn (or a pad) ends the trace without counting in the context, as the text context drops it
    dropped = torch.tensor(sorted({i for i in (eos_id, pad_id) if i is not None}), device=device)
    stops = torch.cat([dropped, torch.tensor([close_id], device=device)])
    sid_ids = sid_token_ids(tokenizer) if max_sid_tokens is not None else []
    budget = SIDTokenBudget(sid_ids, max_sid_tokens, 0) if sid_ids else None   # as in generate_reasoning
    suffix = {True: tokenizer(f"\n{THINK_CLOSE}\n\n", add_special_tokens=False)["input_ids"],
              False: tokenizer("\n\n", add_special_tokens=False)["input_ids"]}   # by "closed by force"
    heads = [tokenizer(f"{p}{THINK_OPEN}\n", add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(heads)), key=lambda i: len(heads[i]))
    out: list = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            input_ids, mask = pad_left([heads[i] for i in chunk], pad_id, device)
            B = input_ids.size(0)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            step_out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1)
            cache, next_pos = step_out.cache, pos[:, -1:] + 1
            done = torch.zeros(B, dtype=torch.bool, device=device)
            generated, real = [], []
            for step in range(max_new_tokens):
                logits = step_out.logits[:, -1].float()
                if budget is not None:
                    logits = budget(torch.stack(generated, 1) if generated else input_ids[:, :0], logits)
                nxt = torch.where(done, torch.full_like(done, pad_id, dtype=torch.long), logits.argmax(-1))
                keep = ~done & ~torch.isin(nxt, dropped)   # the token counts in the context
                generated.append(nxt)
                real.append(keep)
                done = done | torch.isin(nxt, stops)
                if done.all() or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, keep[:, None].long()], -1)
                step_out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, cache=cache,
                                 use_cache=True)
                cache = step_out.cache
                next_pos = next_pos + keep[:, None].long()
            rows = torch.stack(generated, 1).tolist()
            traces = [_trace(prompts[i], row, close_id, eos_id, pad_id, tokenizer) for i, row in zip(chunk, rows)]
            # feed each row's last token (when it counts) and its suffix in one right-aligned block
            tails = [([row[-1]] if bool(real[-1][r]) else []) + suffix[t.forced] for r, (row, t) in
                     enumerate(zip(rows, traces))]
            tail_ids, tail_mask = pad_left(tails, pad_id, device)
            tail_pos = next_pos + (tail_mask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([mask, tail_mask], -1)
            step_out = model(input_ids=tail_ids, attention_mask=mask, position_ids=tail_pos, cache=step_out.cache,
                             use_cache=True, logits_to_keep=1)
            scores, _, leaves = search_from(model, step_out.cache, step_out.logits[:, -1], mask, tail_pos[:, -1:] + 1,
                                            trie, num_beams)
            for r, i in enumerate(chunk):
                out[i] = (traces[r], ranked_leaves(trie, scores[r], leaves[r]))
            bar.update(len(chunk))
    return out


def _trace(prompt: str, row: list[int], close_id: int | None, eos_id: int | None, pad_id: int, tokenizer,
           logprob: float = 0.0) -> Reasoning:
    """The `Reasoning` of one generated row: its tokens up to `</think>`, the end of turn or padding."""
    ends = {close_id, eos_id, pad_id} - {None}
    cut = next((j for j, t in enumerate(row) if t in ends), len(row))
    closed = cut < len(row) and row[cut] == close_id
    text = tokenizer.decode(row[:cut], skip_special_tokens=False)
    if THINK_CLOSE in text:            # stop-string case (no single `</think>` token): the close is inside the text
        text, closed = text.split(THINK_CLOSE, 1)[0], True
    return Reasoning(text=text.strip(), tokens=cut, forced=not closed, context=reasoning_context(prompt, text),
                     logprob=logprob)
