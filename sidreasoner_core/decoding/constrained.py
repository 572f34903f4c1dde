"""Constrained beam search over the catalogue trie, with the trie compiled to tensors.

The trie of catalogue SIDs becomes, per level l, a dense table `children[l]` of shape
(prefixes at depth l, codes used at level l) holding the child prefix id or -1, and a vector
`tokens[l]` mapping a column to its vocabulary id. One decoding step for a whole batch of
beams is then a gather of the allowed columns of the log-probabilities, a mask, and one top-k
per sample: no per-beam Python.

`beam_search` prefills each prompt once, copies its KV cache to the beams, and runs the L
SID levels as L-1 one-token decode steps over samples x beams (the last level needs no
forward). Scores are sums of the model's full-vocabulary log-probabilities (length penalty 0),
so they equal what HF `generate(num_beams=...)` with a prefix constraint computes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..sid import SIDError, parse_sid, token

log = logging.getLogger(__name__)
NEG_INF = float("-inf")


@dataclass
class SIDTrie:
    sids: list[str]                 # unique catalogue SIDs; a leaf id indexes this list
    levels: int
    tokens: list[torch.Tensor]      # per level: (C_l,) vocabulary id of each column (a code used at level l)
    children: list[torch.Tensor]    # per level: (prefixes at depth l, C_l) child prefix id at depth l+1, -1 = not in trie
    column_of: list[torch.Tensor]   # per level: (vocab,) column of a vocabulary id, -1 = not a level-l code
    leaf: torch.Tensor              # (prefixes at depth L,) index into `sids`
    end_column: list[int]           # per level: column meaning "this SID already ended" (-1 = none)

    @classmethod
    def build(cls, sids: Iterable[str], tokenizer) -> "SIDTrie":
        """Compile the unique `sids` against the tokenizer's SID token ids.

        SIDs may differ in length (extra disambiguation levels) as long as none is a prefix of
        another: a shorter SID is padded with an "ended" column whose step adds log-prob 0 (its
        token is end-of-turn, which is what an HF processor allows there).
        """
        unique = sorted(set(sids))
        if not unique:
            raise SIDError("empty catalogue: no SIDs to decode")
        codes = [parse_sid(s) for s in unique]
        levels = max(len(c) for c in codes)
        vocab = tokenizer.get_vocab()
        vocab_size = max(len(tokenizer), max(vocab.values()) + 1)
        end_id = tokenizer.eos_token_id
        arr = np.full((len(codes), levels), -1, dtype=np.int64)
        for i, c in enumerate(codes):
            arr[i, :len(c)] = c
        tokens, children, column_of, end_column = [], [], [], []
        parent = np.zeros(len(unique), dtype=np.int64)   # prefix id of each SID at the current depth
        n_prefixes = 1
        for level in range(levels):
            used = np.unique(arr[:, level])
            ids = []
            for code in used:
                if code < 0:
                    ids.append(end_id)
                    continue
                name = token(level, int(code))
                if name not in vocab:
                    raise SIDError(f"the tokenizer has no token {name}: the model was not given SID tokens "
                                   "(align it first, or set add_missing_sid_tokens for a smoke test)")
                ids.append(vocab[name])
            col = np.searchsorted(used, arr[:, level])
            # child prefix ids at depth level+1: unique (parent, column) pairs
            pairs, child = np.unique(parent * len(used) + col, return_inverse=True)
            table = np.full((n_prefixes, len(used)), -1, dtype=np.int64)
            table[pairs // len(used), pairs % len(used)] = np.arange(len(pairs))
            cmap = np.full(vocab_size, -1, dtype=np.int64)
            cmap[ids] = np.arange(len(ids))
            end_column.append(0 if used[0] < 0 else -1)
            tokens.append(torch.tensor(ids, dtype=torch.long))
            children.append(torch.from_numpy(table))
            column_of.append(torch.from_numpy(cmap))
            parent, n_prefixes = child.reshape(-1), len(pairs)
        leaf = np.empty(n_prefixes, dtype=np.int64)
        leaf[parent] = np.arange(len(unique))
        if len({len(c) for c in codes}) > 1:
            # a SID that is a prefix of another would have to end and go on at once
            prefixes = {tuple(c[:k]) for c in codes for k in range(1, len(c))}
            clash = next((unique[i] for i, c in enumerate(codes) if tuple(c) in prefixes), None)
            if clash:
                raise SIDError(f"SID {clash} is a prefix of another catalogue SID")
        return cls(unique, levels, tokens, children, column_of, torch.from_numpy(leaf), end_column)

    def to(self, device) -> "SIDTrie":
        mv = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return SIDTrie(self.sids, self.levels, mv(self.tokens), mv(self.children), mv(self.column_of),
                       self.leaf.to(device), self.end_column)

    def prefix_nodes(self, generated: torch.Tensor) -> torch.Tensor:
        """Prefix id of each row's generated SID tokens (N, step); -1 where a row left the trie."""
        nodes = torch.zeros(generated.size(0), dtype=torch.long, device=generated.device)
        for level in range(generated.size(1)):
            col = self.column_of[level][generated[:, level]]
            ok = (nodes >= 0) & (col >= 0)
            nxt = self.children[level][nodes.clamp(min=0), col.clamp(min=0)]
            nodes = torch.where(ok, nxt, torch.full_like(nodes, -1))
        return nodes

    def allowed_dict(self, tokenizer) -> dict[tuple[int, ...], list[int]]:
        """The trie as a dict from generated token-id prefix to allowed next ids (the usual approach)."""
        out: dict[tuple[int, ...], set[int]] = {}
        for sid in self.sids:
            ids = tokenizer.convert_tokens_to_ids([token(l, c) for l, c in enumerate(parse_sid(sid))])
            for i in range(len(ids)):
                out.setdefault(tuple(ids[:i]), set()).add(ids[i])
        return {k: sorted(v) for k, v in out.items()}


class TrieLogitsProcessor:
    """HF `LogitsProcessor`: masks every token but the trie's children of each row's SID prefix.

    Stateless and batched: the prefix of every row is re-derived from its tokens after `start`
    with L tensor gathers. After a full SID only `eos_token_id` is allowed.
    """

    def __init__(self, trie: SIDTrie, start: int, eos_token_id: int):
        self.trie, self.start, self.eos = trie, start, eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return trie_step_scores(self.trie, input_ids[:, self.start:], scores, self.eos)


def trie_step_scores(trie: SIDTrie, gen: torch.Tensor, scores: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`scores` with every token masked but the trie's children of each row's generated SID prefix
    `gen` (N, step) (EOS after a full SID)."""
    step = gen.size(1)
    out = torch.full_like(scores, NEG_INF)
    if step >= trie.levels:
        out[:, eos_token_id] = scores[:, eos_token_id]
        return out
    nodes = trie.prefix_nodes(gen)
    cols = trie.tokens[step]
    valid = (nodes[:, None] >= 0) & (trie.children[step][nodes.clamp(min=0)] >= 0)
    out[:, cols] = torch.where(valid, scores[:, cols], torch.full_like(scores[:, cols], NEG_INF))
    return out


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SIDTrie | None,
                num_beams: int = 10, levels: int | None = None):
    """Beam search of one SID per sample after left-padded prompts.

    Returns (scores (B, K), tokens (B, K, L), leaves (B, K) or None), beams sorted best first;
    a score of -inf marks an empty beam (fewer than K catalogue SIDs reachable).
    `trie=None` runs the same loop unconstrained over the full vocabulary (`levels` steps).
    """
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                use_cache=True, logits_to_keep=1)
    return search_from(model, out.cache, out.logits[:, -1], attention_mask, position[:, -1:] + 1, trie,
                       num_beams, levels)


@torch.no_grad()
def search_from(model, cache, last_logits: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor,
                trie: SIDTrie | None, num_beams: int = 10, levels: int | None = None):
    """`beam_search` from a prefilled state: the KV `cache` of B contexts, the logits of their last
    position (B, vocab), their attention `mask` (B, T; zeros anywhere mark positions to ignore) and the
    position id (B, 1) the first SID token takes. Thinking mode starts here from the reasoning's cache."""
    levels = trie.levels if trie is not None else levels
    B, K = last_logits.size(0), num_beams
    dev = last_logits.device
    logp = last_logits.float().log_softmax(-1)
    scores = torch.zeros(B, 1, device=dev)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=dev)
    seqs = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)
    for level in range(levels):
        k_cur = scores.size(1)
        lp = logp.view(B, k_cur, -1)
        if trie is not None:
            cols = trie.tokens[level]
            child = trie.children[level][nodes]                      # (B, k, C)
            cand = lp[..., cols]
            end = trie.end_column[level]
            if end >= 0:   # an ended SID rides along at no cost
                cand = cand.clone()
                cand[..., end] = 0.0
            cand = cand.masked_fill(child < 0, NEG_INF)
        else:
            cand = lp
        total = scores.unsqueeze(-1) + cand
        n_cols = total.size(-1)
        scores, idx = total.view(B, -1).topk(min(K, k_cur * n_cols), dim=-1)
        src = torch.div(idx, n_cols, rounding_mode="floor")
        col = idx % n_cols
        tok = cols[col] if trie is not None else col
        if trie is not None:
            nodes = child.view(B, -1).gather(1, idx).clamp(min=0)
        seqs = torch.cat([seqs.gather(1, src[..., None].expand(-1, -1, seqs.size(2))), tok[..., None]], -1)
        if level == levels - 1:
            break
        # Keep the cache rows of the surviving beams (the first step copies each prompt's row K times).
        rows = (torch.arange(B, device=dev)[:, None] * k_cur + src).view(-1)
        cache.reorder_cache(rows)
        mask = torch.cat([mask[rows], mask.new_ones(rows.numel(), 1)], -1)
        next_pos = next_pos[rows]
        out = model(input_ids=tok.view(-1, 1), attention_mask=mask, position_ids=next_pos, cache=cache,
                    use_cache=True)
        cache, logp = out.cache, out.logits[:, -1].float().log_softmax(-1)
        next_pos = next_pos + 1
    leaves = trie.leaf[nodes] if trie is not None else None
    return scores, seqs, leaves


def encode_left_padded(tokenizer, texts: Sequence[str], device=None):
    """Tokenize already-templated texts (no extra special tokens) into a left-padded batch."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return pad_left(ids, tokenizer.pad_token_id, device)


def pad_left(ids: Sequence[Sequence[int]], pad_id: int, device=None):
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        if x:
            input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[i, width - len(x):] = 1
    return input_ids.to(device), mask.to(device)


def rank_sids(model, tokenizer, prompts: Sequence[str], trie: SIDTrie, num_beams: int = 10,
              batch_size: int = 8, desc: str = "constrained beam search", progress: bool = True
              ) -> list[list[tuple[str, float]]]:
    """Top-`num_beams` catalogue SIDs with their log-probabilities for every prompt, best first."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
    return rank_sid_ids(model, ids, tokenizer.pad_token_id, trie, num_beams, batch_size, desc, progress)


def rank_sid_ids(model, ids: Sequence[Sequence[int]], pad_id: int, trie: SIDTrie, num_beams: int = 10,
                 batch_size: int = 8, desc: str = "constrained beam search", progress: bool = True
                 ) -> list[list[tuple[str, float]]]:
    """`rank_sids` of already-tokenized contexts. Contexts are sorted by length so a batch carries
    little padding; results are in input order."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    trie = trie.to(device)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    results: list[list[tuple[str, float]]] = [[] for _ in ids]
    with tqdm(total=len(ids), desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            input_ids, mask = pad_left([ids[i] for i in chunk], pad_id, device)
            scores, _, leaves = beam_search(model, input_ids, mask, trie, num_beams)
            for row, i in enumerate(chunk):
                results[i] = ranked_leaves(trie, scores[row], leaves[row])
            bar.update(len(chunk))
    return results


def ranked_leaves(trie: SIDTrie, scores: torch.Tensor, leaves: torch.Tensor) -> list[tuple[str, float]]:
    """One sample's (SID, score) beams, best first, without empty beams."""
    return [(trie.sids[int(leaf)], float(s)) for s, leaf in zip(scores, leaves) if s != NEG_INF]
