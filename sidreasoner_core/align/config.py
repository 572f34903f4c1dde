"""Alignment stage settings (SPEC §3). Defaults are the paper's cluster values; the local preset
bounds them (SmolLM2, a few steps)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config import StageConfig

# The tasks of SPEC §3 in order (1-8) plus the general-reasoning mix.
TASKS = (
    "title_to_sid",            # 1
    "sid_to_title",            # 2
    "sid_history_to_title",    # 3
    "title_history_to_title",  # 4
    "sid_history_to_sid",      # 5
    "title_history_to_sid",    # 6
    "item_text",               # 7 (enriched corpus, plain text)
    "user_narrative",          # 8 (enriched corpus, plain text)
    "gsm8k",                   # general reasoning chats
)
EARLY_STOP_TASK = "sid_history_to_sid"
# The paper's ablation of the alignment corpus: S1 SID-language tasks, S2 + the teacher's enriched
# corpus, S3 + general reasoning data (the full recipe).
ABLATION_TASKS = {"S1": TASKS[:6], "S2": TASKS[:8], "S3": TASKS}


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
    max_steps: int = Field(-1, description="> 0 bounds the run (local preset); -1 = epochs decide")
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on a capable GPU, else fp32")
    gradient_checkpointing: bool = False
    sampling: Literal["random", "group_by_length"] = Field(
        "random", description="group_by_length: batches of similar lengths (less padding when a few long tasks "
                              "are mixed into many short ones)")
    num_gpus: int = Field(1, ge=1, description=">1: the step re-launches itself with `accelerate launch`")
    deepspeed: Literal["none", "zero2", "zero3"] = Field("none", description="DeepSpeed ZeRO stage (GPU only)")
    sid_embedding_init: Literal["mean", "random"] = Field(
        "random", description="new SID embedding rows: random (default; on SmolLM2, same data, 4 steps brought the SID-history "
        "validation loss to 7.1 vs 8.5 with mean) or around the mean of the existing rows (transformers' default)")
    resume: bool = Field(True, description="continue from the last complete checkpoint in the output dir")
    eval_on_start: bool = Field(False, description="a validation pass before the first step (losses before training)")


class AlignConfig(StageConfig):
    """Multi-task SID-language alignment (SPEC §3)."""

    model: str = Field("Qwen/Qwen3-1.7B", description="model reference (see sidreasoner_core.models)")
    task_ratios: dict[str, float] = Field(
        default_factory=lambda: {t: 1.0 for t in TASKS},
        description="per task: fraction of its pool used per epoch (1 = all, >1 repeats, 0 = off)")
    ablation: Literal["S1", "S2", "S3"] = Field(
        "S3", description="corpus of the paper's ablation: S1 = tasks 1-6 (SID-language alignment), S2 = + enriched "
                          "corpus (tasks 7-8), S3 = + general reasoning (GSM8K); tasks outside it get ratio 0")
    max_per_task: int | None = Field(None, ge=1, description="cap on training examples per task (local runs)")
    eval_max_per_task: int = Field(500, ge=1, description="validation examples per task")
    eval_tasks: list[str] | None = Field(None, description="tasks with a validation loss; None = all present")
    max_history: int = Field(10, ge=1, description="history items shown in prompts (most recent)")
    gsm8k_train: str = Field("sample_data/gsm8k/train.jsonl", description="GSM8K chats mixed into training")
    gsm8k_test: str = Field("sample_data/gsm8k/test.jsonl", description="GSM8K questions for accuracy")
    gsm8k_eval_n: int = Field(200, ge=0, description="fixed first-N test questions; 0 = skip the check")
    gsm8k_max_new_tokens: int = Field(256, ge=1)
    gsm8k_batch_size: int = Field(16, ge=1)
    seed: int = 42
    work_dir: str | None = Field(None, description="checkpoint directory; default `<out>.work` beside a local output. "
                                 "On the cluster point it at a mounted volume so a retried pod resumes")
    train: SFTOptions = Field(default_factory=SFTOptions)

    def effective_ratios(self) -> dict[str, float]:
        """Per-task ratios with the tasks outside the ablation's corpus switched off."""
        return {t: (self.task_ratios.get(t, 1.0) if t in ABLATION_TASKS[self.ablation] else 0.0) for t in TASKS}

    @field_validator("task_ratios")
    @classmethod
    def _known_ratio_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        for t, r in v.items():
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r} (tasks: {', '.join(TASKS)})")
            if r < 0:
                raise ValueError(f"task {t!r}: ratio {r} < 0")
        return v

    @field_validator("eval_tasks")
    @classmethod
    def _known_eval_tasks(cls, v: list[str] | None) -> list[str] | None:
        for t in v or []:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r} (tasks: {', '.join(TASKS)})")
        return v
