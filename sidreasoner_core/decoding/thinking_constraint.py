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

MAX_SEPARATOR_TOKENS = 2  # "\n\n" between </think> and the SID: at most this many whitespace tokens


def close_token_ids(tokenizer) -> list[int]:
    """The token ids of `</think>` (one id for Qwen3-style tokenizers, a short sequence otherwise)."""
    return list(tokenizer(THINK_CLOSE, add_special_tokens=False)["input_ids"])


def _last_match_end(row: torch.Tensor, pattern: torch.Tensor) -> int | None:
    """Index just after the last occurrence of `pattern` in `row`, or None."""
    n = pattern.numel()
    if row.numel() < n:
        return None
    windows = row.unfold(0, n, 1)
    hits = torch.nonzero((windows == pattern).all(dim=1)).flatten()
    return int(hits.max()) + n if hits.numel() else None


def whitespace_token_ids(tokenizer) -> list[int]:
    """Vocabulary ids that decode to non-empty whitespace (the separator before the SID)."""
    ids = []
    for tok_id in range(len(tokenizer)):
        text = tokenizer.decode([tok_id])
        if text and not text.strip():
            ids.append(tok_id)
    return ids


class ThinkingSIDLogitsProcessor:
    """HF logits processor: unconstrained until `</think>`, then whitespace, then one catalogue SID, then EOS."""

    def __init__(self, trie, close_ids: list[int], eos_token_id: int, whitespace_ids: list[int]):
        from .constrained import TrieLogitsProcessor

        self.trie, self.eos = trie, eos_token_id
        self.close = torch.tensor(close_ids, dtype=torch.long)
        self.space = torch.tensor(whitespace_ids, dtype=torch.long)
        self._processor = TrieLogitsProcessor  # the trie's per-start processor
        self._level0 = trie.tokens[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.trie.tokens[0].device != scores.device:
            self.trie = self.trie.to(scores.device)
            self.space, self._level0 = self.space.to(scores.device), self.trie.tokens[0]
            self.close = self.close.to(scores.device)
        if not (input_ids == self.close[-1]).any():  # cheap pre-check: no row has closed its reasoning
            return scores
        out = scores.clone()
        for row in range(input_ids.size(0)):
            after = _last_match_end(input_ids[row], self.close)
            if after is None:
                continue
            tail = input_ids[row, after:]
            n_space = 0
            while n_space < tail.numel() and bool(torch.isin(tail[n_space], self.space)):
                n_space += 1
            if n_space == tail.numel():  # SID not started: a separator token or the first SID token
                allowed = self._level0 if n_space >= MAX_SEPARATOR_TOKENS else torch.cat([self.space, self._level0])
                masked = torch.full_like(scores[row], float("-inf"))
                masked[allowed] = scores[row, allowed]
                out[row] = masked
            else:
                proc = self._processor(self.trie, after + n_space, self.eos)
                out[row] = proc(input_ids[row:row + 1], scores[row:row + 1])[0]
        return out


def thinking_sid_logits_processor(tokenizer, catalogue) -> ThinkingSIDLogitsProcessor:
    from .constrained import SIDTrie

    trie = SIDTrie.build(list(catalogue.item_by_sid), tokenizer)
    return ThinkingSIDLogitsProcessor(trie, close_token_ids(tokenizer), tokenizer.eos_token_id,
                                      whitespace_token_ids(tokenizer))
