"""Optional constrained rollouts: free reasoning, then only a catalogue SID after `</think>`.

Built on the evaluation stage's compiled trie and its `TrieLogitsProcessor` (which constrains a
SID that starts at a known position). During a rollout the SID starts wherever the row closed
its reasoning, so this wrapper finds, per row, the `</think>` token and the whitespace after it,
then hands the row to the evaluation's processor with that start. Rows still reasoning are left
untouched. The paper's reference runs did not constrain rollouts (hence off by default).
"""
from __future__ import annotations

import torch

from .rewards import THINK_CLOSE

MAX_SEPARATOR_TOKENS = 2  # "\n\n" between </think> and the SID: at most this many whitespace tokens


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


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

    def __init__(self, trie, close_id: int, eos_token_id: int, whitespace_ids: list[int]):
        from ..evaluation.constrained import TrieLogitsProcessor

        self.trie, self.close_id, self.eos = trie, close_id, eos_token_id
        self.space = torch.tensor(whitespace_ids, dtype=torch.long)
        self._processor = TrieLogitsProcessor  # the evaluation's per-start processor
        self._level0 = trie.tokens[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.trie.tokens[0].device != scores.device:
            self.trie = self.trie.to(scores.device)
            self.space, self._level0 = self.space.to(scores.device), self.trie.tokens[0]
        is_close = input_ids == self.close_id
        if not is_close.any():
            return scores
        out = scores.clone()
        for row in torch.nonzero(is_close.any(dim=1)).flatten().tolist():
            after = int(torch.nonzero(is_close[row]).max()) + 1
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
    from ..evaluation.constrained import SIDTrie

    close_id = _single_token_id(tokenizer, THINK_CLOSE)
    if close_id is None:
        raise ValueError(f"constrained_sid needs {THINK_CLOSE!r} as a single token of the tokenizer "
                         "(add it as a token at alignment, as Qwen3 has it), or use_vllm with the regex")
    trie = SIDTrie.build(list(catalogue.item_by_sid), tokenizer)
    return ThinkingSIDLogitsProcessor(trie, close_id, tokenizer.eos_token_id, whitespace_token_ids(tokenizer))
