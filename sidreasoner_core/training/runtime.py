"""Where training runs: device, precision and CPU threads, decided in one place for every trainer."""
from __future__ import annotations

import contextlib
from typing import Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]

# accelerate's --mixed_precision names for our precisions
ACCELERATE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(precision: Precision) -> str:
    """"auto" -> bf16 on a bf16-capable GPU, else fp32 (the same answer in-process and in launched workers)."""
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return precision


def trainer_precision(precision: Precision) -> dict:
    """The `bf16` / `fp16` flags of a transformers/TRL config."""
    p = resolve_precision(precision)
    return {"bf16": p == "bf16", "fp16": p == "fp16"}


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with `n` torch CPU threads (None/0: leave torch's setting); the previous count is restored."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
