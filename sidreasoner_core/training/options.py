"""Trainer options shared by every training stage (alignment, cold-start SFT, GRPO's multi-GPU knobs).

Field names follow TRL's/transformers' `TrainingArguments` where they mean the same thing, so
`training.trl_args` passes them through by name.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import StageConfig, StepBudget

PRECISION_FIELD = dict(description="auto: bf16 on a bf16-capable GPU, else fp32; bf16 without a GPU: fp32 on a CPU "
                                   "without native bf16 (AVX-512 BF16 or AMX). In process and in launched workers")
NUM_GPUS_FIELD = dict(description=">1: the step runs its trainer in `accelerate launch` workers (training.launch)")
DEEPSPEED_FIELD = dict(description="DeepSpeed ZeRO stage (GPU only), via training/accelerate_configs")


class SFTOptions(StageConfig):
    """Trainer settings for one SFT run (shared by alignment and the cold-start SFT).

    Effective batch = per_device_train_batch_size x gradient_accumulation_steps x num_gpus
    (paper: 1024).
    """

    learning_rate: float = Field(3e-4, gt=0, description="peak learning rate (paper: 3e-4 for alignment)")
    per_device_train_batch_size: int = Field(16, ge=1)
    per_device_eval_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1, description="16 x 8 x 8 GPUs = 1024 (paper's effective batch)")
    num_train_epochs: float = Field(10.0, gt=0, description="upper bound; early stopping usually ends it first")
    max_steps: StepBudget = Field(-1, description="> 0 bounds the run (local preset); -1 = epochs decide")
    max_length: int = Field(512, ge=16, description="tokens per example; longer ones are truncated at the end")
    lr_scheduler_type: str = Field("cosine")
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_strategy: Literal["steps", "epoch", "no"] = Field("epoch", description="checkpoints follow the same strategy")
    eval_steps: int = Field(100, ge=1, description="with eval_strategy=steps")
    early_stopping_patience: int | None = Field(3, ge=1, description="evaluations without improvement; None = off")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept (the best is always kept too)")
    logging_steps: int = Field(1, ge=1)
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", **PRECISION_FIELD)
    gradient_checkpointing: bool = False
    sampling: Literal["random", "group_by_length", "length_batches", "sorted_micro_batches"] = Field(
        "random", description="group_by_length: batches of similar lengths (less padding when a few long tasks "
                              "are mixed into many short ones), each mega-batch walked longest first; "
                              "length_batches: the same batches in random order; sorted_micro_batches: random "
                              "batches of per_device_train_batch_size x gradient_accumulation_steps rows, each "
                              "sorted by length before it is cut into its micro-batches (the same optimizer "
                              "steps as random batches of that size, less padding) (training.sampling)")
    num_gpus: int = Field(1, ge=1, **NUM_GPUS_FIELD)
    deepspeed: Literal["none", "zero2", "zero3"] = Field("none", **DEEPSPEED_FIELD)
    sid_embedding_init: Literal["mean", "random"] = Field(
        "random", description="new SID embedding rows: random (default; on SmolLM2, same data, 4 steps brought the SID-history "
        "validation loss to 7.1 vs 8.5 with mean) or around the mean of the existing rows (transformers' default)")
    resume: bool = Field(True, description="continue from the last complete checkpoint in the output dir")
    eval_on_start: bool = Field(False, description="a validation pass before the first step (losses before training)")


class ClusterConfig(StageConfig):
    """GRPO's multi-GPU knobs (same meaning as in `SFTOptions`); ignored on CPU."""

    num_gpus: int = Field(1, ge=1, **NUM_GPUS_FIELD)
    deepspeed: Literal["none", "zero2", "zero3"] = Field("none", **DEEPSPEED_FIELD)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", **PRECISION_FIELD)
    gradient_checkpointing: bool = Field(False, description="trade compute for memory on long completions")
