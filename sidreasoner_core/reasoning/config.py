"""Settings of the two reasoning stages: `coldstart` (paper §3.3.1) and `grpo` (paper §3.3.2).

Defaults are the paper's cluster values; the local preset shrinks the budgets
(steps, samples, generations, lengths), never the method.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import StageConfig, StepBudget
from ..training.options import ClusterConfig, SFTOptions


class PromptConfig(StageConfig):
    """How a sample becomes a prompt (shared by both stages so cold-start and RL see the same input)."""

    max_history: int = Field(10, ge=1, description="at most this many most recent history items in the prompt")
    thinking: bool = Field(True, description="ask for reasoning before the SID (paper §3.3.1 instruction)")


def _cpu_threads_field():
    return Field(None, ge=1, description="torch CPU threads for the run (None: torch default). On a shared, "
                                         "busy CPU box 1 thread avoids oversubscription stalls")


def coldstart_sft_defaults():
    """The shared SFT options with paper §3.3.1 values: one epoch at lr 1e-5, no early stopping."""
    return SFTOptions(learning_rate=1e-5, num_train_epochs=1.0, per_device_train_batch_size=8,
                      gradient_accumulation_steps=4, max_length=2048, eval_strategy="no",
                      early_stopping_patience=None, eval_steps=200, logging_steps=10)


def train_defaults(defaults):
    """The `train` field's validator: a partial `train:` mapping overrides `defaults()` (the stage's own
    values), not SFTOptions' field defaults (the alignment's)."""
    def merge(cls, v):
        return {**defaults().model_dump(), **v} if isinstance(v, dict) else v
    return field_validator("train", mode="before")(merge)


def self_trace_sft_defaults():
    """One epoch at lr 1e-4 over short rows (prompt + own trace + SID; the loss is on the SID alone)."""
    return SFTOptions(learning_rate=1e-4, num_train_epochs=1.0, per_device_train_batch_size=32,
                      gradient_accumulation_steps=1, max_length=256, eval_strategy="no",
                      early_stopping_patience=None, warmup_ratio=0.0, logging_steps=10)


class SelfTraceConfig(StageConfig):
    """Answer after its own reasoning (not in the paper): once the cold-start SFT has taught the format, the
    model writes its greedy trace for each training sample, exactly as thinking mode will at test time, and
    a second short SFT trains the target SID after that trace (loss on the SID only; the trace is given).

    Why: the cold-start SFT puts every SID after a teacher's trace, whose last sentence names the target's
    type and brand (the teacher saw the target, paper §3.2.3). At test time the SID follows the model's own
    trace instead, a guess that is usually wrong, and a model trained only on the teacher's traces trusts it.
    Training on its own traces closes that gap between training and inference."""

    enabled: bool = Field(False, description="run the second SFT on the model's own traces (off: the paper's "
                                             "cold-start alone)")
    max_samples: int | None = Field(None, ge=1, description="training samples to write traces for (None: every "
                                                            "sample of the corpus's reasoning table)")
    max_reasoning_tokens: int = Field(64, ge=1, description="greedy reasoning budget (as evaluate's)")
    max_reasoning_sid_tokens: int | None = Field(
        0, ge=0, description="SID tokens allowed inside a trace (as evaluate.max_reasoning_sid_tokens)")
    batch_size: int = Field(64, ge=1, description="prompts per generation batch")
    direct_rows: bool = Field(False, description="also train the bare SID after the direct-mode prompt of each "
                                                 "sample (alignment's task 5 again), so the cold-start does not "
                                                 "cost direct mode")
    train: SFTOptions = Field(default_factory=self_trace_sft_defaults, description="the shared SFT options")
    _train_defaults = train_defaults(self_trace_sft_defaults)


class ColdStartConfig(StageConfig):
    """Cold-start reasoning activation: SFT on `<think>\\n{reasoning}\\n</think>\\n\\n{SID}` (paper §3.3.1)."""

    enabled: bool = Field(True, description="off: pass the input model through unchanged (the paper's "
                                            "ablation without cold-start + GRPO; switch grpo off too)")
    model: str | None = Field(None, description="model reference; default: the input model artifact")
    max_samples: int | None = Field(None, ge=1, description="use at most this many reasoning traces")
    max_reasoning_words: int | None = Field(
        None, ge=1, description="cut each trace to whole sentences within this many words (None: keep all). "
        "A budget knob for small runs, so the activated reasoning fits GRPO's max_completion_length")
    seed: int = 42
    cpu_threads: int | None = _cpu_threads_field()
    work_dir: str | None = Field(None, description="checkpoint directory; default: beside the output artifact")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    train: SFTOptions = Field(default_factory=coldstart_sft_defaults,
                              description="the shared SFT options (checkpoints every eval_steps)")
    self_traces: SelfTraceConfig = Field(default_factory=SelfTraceConfig,
                                         description="then train the SID after the model's own traces")
    _train_defaults = train_defaults(coldstart_sft_defaults)


class RewardConfig(StageConfig):
    """r = r_rule + format_weight * r_format (paper §3.3.2)."""

    rule: Literal["stepwise", "prefix_fraction"] = Field(
        "stepwise", description="stepwise 0.25/0.5/1.0 (paper) or m/L for a correct prefix of m of L tokens")
    stepwise_values: tuple[float, ...] = Field((0.25, 0.5, 1.0), description="credit for prefixes a, a+b, a+b+c")
    format_weight: float = Field(0.1, ge=0, description="λ, weight of the catalogue-validity reward")
    strict_answer: bool = Field(False, description="give 0 when anything but the SID follows </think>")
    likelihood_weight: float = Field(
        0.0, ge=0, description="weight of r_lik = p(target SID | prompt, reasoning)^(1/L) under `likelihood_model`, "
                               "a dense reward beside the sparse prefix match (not in the paper; 0 = the paper's "
                               "reward)")
    likelihood_model: Literal["policy", "reference"] = Field(
        "policy", description="which model scores r_lik: the policy being trained, or the frozen reference (the "
                              "cold-started model; a fixed reward the policy cannot move by moving itself; "
                              "needs beta > 0)")


class GRPOStageConfig(StageConfig):
    """GRPO on the cold-started model (paper §3.3.2, with the §4.1.3 values as defaults)."""

    enabled: bool = Field(True, description="off: pass the input model through unchanged (ablation)")
    model: str | None = Field(None, description="model reference; default: the input model artifact")
    num_generations: int = Field(16, ge=2, description="group size G: rollouts per prompt")
    prompts_per_step: int = Field(256, ge=1, description="prompts per optimizer step (paper batch 256)")
    per_device_train_batch_size: int = Field(
        16, ge=1, description="completions per forward/backward micro-batch; accumulation covers the rest")
    temperature: float = Field(1.0, gt=0, description="rollout sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(1e-3, ge=0, description="KL coefficient (k3 estimator as a loss term)")
    epsilon: float = Field(0.2, gt=0, description="PPO clip range")
    epsilon_high: float | None = Field(
        None, gt=0, description="upper clip bound (None: epsilon, the paper's symmetric clip). DAPO's clip-higher "
                                "(0.28) lets rare tokens' probabilities rise further, against the collapse of the "
                                "rollouts' spread (docs/quality.md: zero-spread groups 9% -> 89% over an epoch)")
    learning_rate: float = Field(1e-6, gt=0, description="paper: 5e-7 to 1e-6")
    max_completion_length: int = Field(1024, ge=4, description="reasoning + SID tokens per rollout")
    num_iterations: int = Field(1, ge=1, description="policy updates per generated batch (μ)")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="token-level aggregation; 'dapo' = token-mean over the batch (verl's default)")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="advantage normalisation")
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: StepBudget = Field(-1, description="stop after this many optimizer steps (-1 = epochs decide)")
    max_samples: int | None = Field(None, ge=1, description="use at most this many training samples")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    constrained_sid: bool = Field(
        False, description="constrain rollouts after </think> to catalogue SIDs (off: the paper's setting)")
    rollout_reasoning_budget: int | None = Field(
        None, ge=1, description="with constrained_sid: a rollout that has not closed its reasoning after this many "
                                "tokens writes </think> next, as evaluation closes a trace at its budget, so every "
                                "rollout ends in a SID and the reward's spread is about the recommendation, not the "
                                "format (None: off; not in the paper; docs/quality.md, session 23)")
    use_vllm: bool = Field(False, description="vLLM rollouts (GPU); off = transformers generate")
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = Field(None, description="server mode: URL of `trl vllm-serve`")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    eval_steps: int = Field(50, ge=1, description="Recall@10 on the fixed validation subset every N steps")
    eval_samples: int = Field(64, ge=0, description="size of the fixed validation subset (0 = off)")
    eval_max_reasoning_tokens: int | None = Field(
        None, ge=1, description="greedy reasoning budget at eval; default max_completion_length")
    eval_beams: int = Field(10, ge=1, description="constrained beams over the SID at eval (top-10)")
    eval_max_reasoning_sid_tokens: int | None = Field(
        30, ge=0, description="SID tokens allowed inside the reasoning at eval (as evaluate.max_reasoning_sid_tokens)")
    eval_reasoning_samples: int = Field(
        0, ge=0, description="sampled traces per validation prompt, p(SID | trace) averaged (as "
                             "evaluate.reasoning_samples; 0 = greedy reasoning)")
    publish: Literal["final", "best_validation"] = Field(
        "final", description="which policy the stage publishes: the last step's (the paper's), or the one with the "
                             "best validation Recall@10 among every measurement, the input's at step 0 included "
                             "(ties go to the earlier step; needs eval_samples > 0). GRPO that does not lift the "
                             "validation curve then leaves the cold-started model as it was")
    early_stopping_patience: int = Field(
        0, ge=0, description="with publish best_validation: stop once this many validation measurements in a row "
                             "have not beaten the best so far (0 = off, run every step). The published policy is "
                             "the best measured, so stopping only saves the steps a flat curve would waste. "
                             "Not under ZeRO-3, where no validation curve is measured during training")
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume after a kill)")
    save_total_limit: int = Field(2, ge=1)
    seed: int = 42
    cpu_threads: int | None = _cpu_threads_field()
    resume: bool = Field(True, description="continue from the last checkpoint in the work dir if present")
    work_dir: str | None = Field(None, description="checkpoint directory; default: beside the output artifact")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.early_stopping_patience and (self.publish != "best_validation" or not self.eval_samples):
            raise ValueError("early_stopping_patience needs publish 'best_validation' and eval_samples > 0 (it "
                             "stops where the validation curve stopped rising; publishing the last step would then "
                             "publish a policy the curve says is worse)")
        if self.rollout_reasoning_budget is not None:
            if not self.constrained_sid or self.use_vllm:
                raise ValueError("rollout_reasoning_budget needs constrained_sid and transformers rollouts (use_vllm "
                                 "false): the budget is enforced by the rollout constraint")
            if self.rollout_reasoning_budget >= self.max_completion_length:
                raise ValueError(f"rollout_reasoning_budget ({self.rollout_reasoning_budget}) must leave room in "
                                 f"max_completion_length ({self.max_completion_length}) for </think> and the SID")
        if self.use_vllm and self.vllm_mode == "server" and not self.vllm_server_base_url:
            raise ValueError("vllm_mode 'server' needs vllm_server_base_url")
        if self.reward.likelihood_weight > 0 and self.reward.likelihood_model == "reference" and self.beta == 0:
            raise ValueError("reward.likelihood_model 'reference' needs beta > 0 (TRL loads no reference model at 0)")
        return self
