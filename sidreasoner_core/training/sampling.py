"""Training-batch order for SFT: batches of similar length, visited in random order.

Alignment mixes short rows (a SID history -> the next SID, ~77 tokens) with longer ones (the user
reasoning rows, ~143): batches drawn at random are padded to their longest row, and half of every
step's tokens were padding (docs/quality.md). transformers' `group_by_length` removes the padding
but walks each mega-batch from its longest rows to its shortest, so the tasks arrive in waves;
shuffling the batches after grouping keeps the padding low and spreads the tasks over the epoch.
Each batch is still (nearly) one task, though: on `make run` alignment ran 1.39x faster and R@10 fell
14% (docs/quality.md, session 15).

`sorted_micro_batches` keeps the random batches and pads less inside each one: a random batch of
micro-batch x accumulation rows is sorted by length and cut into its micro-batches, so short rows
are padded with short rows. TRL normalises the loss by the labelled tokens of the whole accumulated
batch (`num_items_in_batch`), so each optimizer step is the random batch's step (tests/test_align_sft.py).
"""
from __future__ import annotations

from typing import Sequence


def length_batches_order(lengths: Sequence[int], batch_size: int) -> list[int]:
    """Row indices in an order whose consecutive `batch_size` slices have similar lengths, those slices
    shuffled. Uses torch's global RNG, as transformers' samplers do, so the Trainer's seeding (and its
    saved RNG state on resume) fixes the order. The one short batch, if any, stays last so that every
    other slice is whole."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(list(lengths), batch_size)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    # a short slice only ends a mega-batch; at most the last one of the epoch is short
    short = [b for b in batches if len(b) < batch_size]
    full = [b for b in batches if len(b) == batch_size]
    return [i for k in torch.randperm(len(full)).tolist() for i in full[k]] + [i for b in short for i in b]


class LengthBatchSampler:
    """A `torch.utils.data.Sampler` over `length_batches_order` (a new order each epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int):
        self.lengths, self.batch_size = list(lengths), batch_size

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_batches_order(self.lengths, self.batch_size))


def sorted_micro_batches_order(lengths: Sequence[int], batch_size: int, accumulation: int) -> list[int]:
    """Row indices whose consecutive `batch_size * accumulation` slices are random batches (a random
    permutation cut in order, as a random sampler's), each sorted by length, so its `accumulation`
    micro-batches of `batch_size` hold rows of similar length. Torch's global RNG, as above."""
    import torch

    step = batch_size * accumulation
    perm = torch.randperm(len(lengths)).tolist()
    return [i for k in range(0, len(perm), step) for i in sorted(perm[k:k + step], key=lambda i: lengths[i])]


class SortedMicroBatchSampler(LengthBatchSampler):
    """A `torch.utils.data.Sampler` over `sorted_micro_batches_order` (a new order each epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, accumulation: int):
        super().__init__(lengths, batch_size)
        self.accumulation = accumulation

    def __iter__(self):
        return iter(sorted_micro_batches_order(self.lengths, self.batch_size, self.accumulation))


OWN_SAMPLERS = ("length_batches", "sorted_micro_batches")  # SFTOptions.sampling values ordered here, not by transformers


def own_sampler(sampling: str, lengths: Sequence[int], batch_size: int, accumulation: int):
    """The sampler of an `OWN_SAMPLERS` order over rows of `lengths`."""
    if sampling == "sorted_micro_batches":
        return SortedMicroBatchSampler(lengths, batch_size, accumulation)
    if sampling == "length_batches":
        return LengthBatchSampler(lengths, batch_size)
    raise ValueError(f"sampling {sampling!r}: not one of {OWN_SAMPLERS}")
