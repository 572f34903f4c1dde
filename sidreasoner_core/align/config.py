"""Alignment stage settings (paper §3.2.2). Defaults are the paper's cluster values; the local preset
bounds them (SmolLM2, a few steps)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config import StageConfig
from ..training.options import SFTOptions

# The alignment tasks (paper §3.2.2-§3.2.3, Appendix B) in our order (1-8) plus the general-reasoning mix.
TASKS = (
    "title_to_sid",            # 1
    "sid_to_title",            # 2
    "sid_history_to_title",    # 3
    "title_history_to_title",  # 4
    "sid_history_to_sid",      # 5
    "title_history_to_sid",    # 6
    "item_text",               # 7 (enriched corpus, plain text)
    "user_narrative",          # 8 (enriched corpus, plain text)
    "user_reasoning",          # 8 as reason-then-SID chats: SID history -> <think>rationale</think> SID
    "gsm8k",                   # general reasoning chats
)
EARLY_STOP_TASK = "sid_history_to_sid"
# The paper's ablation of the alignment corpus: S1 SID-language tasks, S2 + the teacher's enriched
# corpus, S3 + general reasoning data (the full recipe).
ABLATION_TASKS = {"S1": TASKS[:6], "S2": TASKS[:9], "S3": TASKS}


class AlignConfig(StageConfig):
    """Multi-task SID-language alignment (paper §3.2.2)."""

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
    reasoning_max_words: int | None = Field(
        None, ge=1, description="user_reasoning rows: cut each trace to whole sentences within this many words "
                                "(as coldstart.max_reasoning_words; None: keep all)")
    scratch_vocab_size: int | None = Field(
        None, ge=300, description="a scratch model (small-qwen3, tiny-qwen3): train its BPE tokenizer on the "
                                  "catalogue's titles and the teacher's traces with this many tokens, so reasoning "
                                  "is words, not bytes (None: the built-in 600-token tokenizer)")
    # In the package (sidreasoner_core/resources), so every image has them: the builds leave sample_data/ out.
    gsm8k_train: str = Field("sidreasoner_core/resources/gsm8k_train_sample.jsonl",
                             description="GSM8K chats mixed into training (default: the first 200; the cluster "
                                         "preset: all 7,473, gsm8k_train.jsonl)")
    gsm8k_test: str = Field("sidreasoner_core/resources/gsm8k_test.jsonl",
                            description="GSM8K questions for accuracy (the first gsm8k_eval_n are used)")
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
