"""Optional constrained rollouts: free reasoning, then only a catalogue SID after `</think>`.

Built on the compiled catalogue trie and its `TrieLogitsProcessor` (`decoding.constrained`, which
constrains a SID that starts at a known position). During a rollout the SID starts wherever the row
closed its reasoning, so this wrapper finds, per row, the `</think>` token(s) and the whitespace after
it, then hands the row to the trie processor with that start. Rows still reasoning are left
untouched. `</think>` may be one token (Qwen3) or a short token sequence (SmolLM2): the row is matched against
the tokenizer's own encoding of it. The paper's reference runs did not constrain rollouts (hence
off by default).
"""
from __future__ import annotations

import torch

from ..prompts import THINK_CLOSE
from .constrained import trie_step_scores

MAX_SEPARATOR_TOKENS = 2  # "\n\n" between </think> and the SID: at most this many whitespace tokens


def close_token_ids(tokenizer) -> list[int]:
    """The token ids of `</think>` (one id for Qwen3-style tokenizers, a short sequence otherwise)."""
    return list(tokenizer(THINK_CLOSE, add_special_tokens=False)["input_ids"])


def close_ends(input_ids: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Per row, the index just after the last occurrence of `pattern` (-1 where it does not occur)."""
    n = pattern.numel()
    if input_ids.size(1) < n:
        return torch.full((input_ids.size(0),), -1, dtype=torch.long, device=input_ids.device)
    hits = (input_ids.unfold(1, n, 1) == pattern).all(dim=-1)          # (rows, windows)
    idx = torch.arange(hits.size(1), device=input_ids.device)
    last = torch.where(hits, idx, torch.full_like(idx, -1)).max(dim=1).values
    return torch.where(last >= 0, last + n, last)


def whitespace_token_ids(tokenizer) -> list[int]:
    """Vocabulary ids that decode to non-empty whitespace (the separator before the SID)."""
    ids = []
    for tok_id in range(len(tokenizer)):
        text = tokenizer.decode([tok_id])
        if text and not text.strip():
            ids.append(tok_id)
    return ids


class ThinkingSIDLogitsProcessor:
    """HF logits processor: unconstrained until `</think>`, then whitespace, then one catalogue SID, then EOS.

    With `reasoning_budget`, a row still reasoning cannot end (EOS), and once it has generated that many tokens it
    is made to write `</think>` next, as evaluation closes a trace at its budget (`decoding.thinking`): every
    rollout then ends in a catalogue SID. `reset()` marks the start of a new `generate` call (where the prompt ends)."""

    def __init__(self, trie, close_ids: list[int], eos_token_id: int, whitespace_ids: list[int],
                 reasoning_budget: int | None = None):
        self.trie, self.eos = trie, eos_token_id
        self.close = torch.tensor(close_ids, dtype=torch.long)
        self.space = torch.tensor(whitespace_ids, dtype=torch.long)
        self.budget, self.start = reasoning_budget, None

    def reset(self) -> None:
        self.start = None

    def _force_close(self, input_ids: torch.Tensor, scores: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Rows that have not closed their reasoning (`after` < 0, `close_ends`'s): no EOS before the budget, then
        only the next `</think>` token."""
        if self.start is None:
            self.start = input_ids.size(1)
        open_rows = (after < 0).nonzero().flatten()
        if not len(open_rows):
            return scores
        scores = scores.clone()
        if input_ids.size(1) - self.start < self.budget:
            scores[open_rows, self.eos] = float("-inf")
            return scores
        # a multi-token `</think>` may be partly written: continue it where the row's tail left off
        n = self.close.numel()
        written = torch.zeros(len(open_rows), dtype=torch.long, device=input_ids.device)
        for k in range(1, min(n, input_ids.size(1))):
            tail = (input_ids[open_rows, -k:] == self.close[:k]).all(dim=1)
            written = torch.where(tail, torch.full_like(written, k), written)
        forced = torch.full_like(scores[open_rows], float("-inf"))
        forced[torch.arange(len(open_rows)), self.close[written]] = 0.0
        scores[open_rows] = forced
        return scores

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.trie.tokens[0].device != scores.device:
            self.trie = self.trie.to(scores.device)
            self.space, self.close = self.space.to(scores.device), self.close.to(scores.device)
        after = None
        if self.budget is not None:   # every row's close position is needed now, once for both parts
            after = close_ends(input_ids, self.close)
            scores = self._force_close(input_ids, scores, after)
        elif not (input_ids == self.close[-1]).any():  # cheap pre-check: no row has closed its reasoning
            return scores
        # Batched over rows (a rollout step holds hundreds): where each row closed its reasoning, how many
        # separator tokens follow, and how many SID tokens it has written since.
        length = input_ids.size(1)
        if after is None:
            after = close_ends(input_ids, self.close)
        closed = after >= 0
        if not closed.any():
            return scores
        is_space = torch.isin(input_ids, self.space)
        n_space = torch.zeros_like(after)
        leading = closed.clone()
        for j in range(MAX_SEPARATOR_TOKENS + 1):   # the constraint never lets a row write more separators
            pos = after + j
            inside = pos < length
            leading &= inside & is_space.gather(1, pos.clamp(0, length - 1)[:, None])[:, 0]
            n_space += leading.long()
        written = torch.where(closed, length - after - n_space, torch.full_like(after, -1))
        out = scores.clone()
        level0 = self.trie.tokens[0]
        not_started = (written == 0).nonzero().flatten()
        if len(not_started):  # a separator token or the first SID token
            masked = torch.full_like(scores[not_started], float("-inf"))
            for allowed, rows in ((level0, n_space[not_started] >= MAX_SEPARATOR_TOKENS),
                                  (torch.cat([self.space, level0]), n_space[not_started] < MAX_SEPARATOR_TOKENS)):
                sel = rows.nonzero().flatten()
                masked[sel[:, None], allowed[None, :]] = scores[not_started[sel]][:, allowed]
            out[not_started] = masked
        for step in written[written > 0].unique().tolist():   # rows inside their SID, by SID tokens written
            rows = (written == step).nonzero().flatten()
            gen = input_ids[rows, length - step:]
            out[rows] = trie_step_scores(self.trie, gen, scores[rows], self.eos)
        return out


def thinking_sid_logits_processor(tokenizer, catalogue,
                                  reasoning_budget: int | None = None) -> ThinkingSIDLogitsProcessor:
    from .constrained import SIDTrie

    trie = SIDTrie.build(list(catalogue.item_by_sid), tokenizer)
    return ThinkingSIDLogitsProcessor(trie, close_token_ids(tokenizer), tokenizer.eos_token_id,
                                      whitespace_token_ids(tokenizer), reasoning_budget)
