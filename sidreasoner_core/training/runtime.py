"""Where training runs: device, precision and CPU threads, decided in one place for every trainer."""
from __future__ import annotations

import contextlib
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]

# accelerate's --mixed_precision names for our precisions
ACCELERATE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}

# glibc malloc for torch on CPU: tensors up to 32 MB come from the heap, and up to 1 GB of freed heap
# stays mapped, instead of an mmap + munmap (and the kernel zeroing fresh pages) per large tensor. On the
# 2-core test machine, evaluation decoding made ~2M page faults per 640 samples and spent a quarter of its
# time in the kernel; with these, ~0.1M and 25% less wall time (docs/quality.md, session 21). glibc reads
# them when a process starts: set in the images (docker/*.Dockerfile) and for `sidreasoner run`'s steps.
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 autocast pays (SmolLM2-135M: 2.6x per step). Elsewhere
    PyTorch emulates bf16 and a step of the scratch model is ~15x slower than fp32 (an AVX2 EPYC:
    0.95 s vs 15 s per 64x120-token step)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", text) is not None


def resolve_precision(precision: Precision) -> str:
    """"auto" -> bf16 on a bf16-capable GPU, else fp32. "bf16" without a GPU -> fp32 on a CPU that lacks
    native bf16 (a preset's bf16 must not make a run 15x slower there). The same answer in-process and
    in launched workers."""
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if precision == "bf16" and not has_gpu() and not cpu_has_native_bf16():
        log.warning("precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), training in fp32 instead")
        return "fp32"
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


def rank_zero_decides(flag: bool) -> bool:
    """Rank 0's `flag` on every process of a distributed run, `flag` itself otherwise: a decision only rank 0
    can make (it alone measures the validation curve) must reach every rank, or the others would wait in the
    next step's collectives for a rank that stopped."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


@contextlib.contextmanager
def completion_only_logprobs():
    """Score only the labelled tokens in TRL's fused LM head on CPU, for the block's duration.

    TRL's fused head (`trl.trainer.utils.add_fused_lm_head`) scores only the labelled positions where
    Triton runs, and every position elsewhere, so that compiled backends see fixed tile shapes. Eager
    CPU has no such need, and the prompt is most of every row (about 70% of a GRPO rollout, nearly all
    of an alignment row whose answer is one SID): the full-vocabulary log-softmax over prompt and
    padding positions is work whose result is masked away. Same log-probs and gradients
    (tests/test_reasoning_grpo.py); speed-ups in bench/grpo_scale.py and bench/sft_speed.py."""
    try:
        from trl.trainer import utils as trl_utils
        original = trl_utils._use_triton
    except (ImportError, AttributeError):  # another TRL: keep its own behaviour
        log.warning("TRL's fused LM head has no _use_triton switch; scoring every position")
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original
