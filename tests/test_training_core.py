"""The training core's config mapping: our options reach TRL's configs by TRL's own names."""
from __future__ import annotations

import dataclasses

from sidreasoner_core.training.options import SFTOptions
from sidreasoner_core.training.trl_args import NOT_TRL, RENAMED, shared_values

# Options that are ours alone (the launcher, the resume policy, our early stopping and SID rows).
SFT_ONLY_OURS = {"early_stopping_patience", "num_gpus", "precision", "resume", "sid_embedding_init"} | NOT_TRL


def _non_defaults():
    return SFTOptions(learning_rate=1.5e-4, per_device_train_batch_size=3, per_device_eval_batch_size=5,
                      gradient_accumulation_steps=7, num_train_epochs=2.5, max_steps=11, max_length=96,
                      lr_scheduler_type="linear", warmup_ratio=0.2, weight_decay=0.01, max_grad_norm=0.5,
                      eval_strategy="steps", eval_steps=4, save_total_limit=3, logging_steps=2, seed=7,
                      gradient_checkpointing=True, sampling="group_by_length")


def test_every_sft_option_reaches_trl_or_is_ours():
    from trl import SFTConfig

    trl = {f.name for f in dataclasses.fields(SFTConfig)}
    unmapped = {f for f in SFTOptions.model_fields if RENAMED.get(f, f) not in trl or f in NOT_TRL}
    assert unmapped == SFT_ONLY_OURS


def test_sft_config_carries_our_values(tmp_path):
    from sidreasoner_core.training.sft import make_sft_config

    opts = _non_defaults()
    cfg = make_sft_config(opts, tmp_path, metric="eval_t_loss", has_eval=True)
    for name, value in shared_values(type(cfg), opts).items():
        assert getattr(cfg, name) == value, name
    assert cfg.learning_rate == 1.5e-4 and cfg.gradient_accumulation_steps == 7 and cfg.max_length == 96
    assert cfg.warmup_steps == 0.2 and cfg.activation_checkpointing is True
    assert cfg.train_sampling_strategy == "group_by_length"
    assert cfg.eval_steps == cfg.save_steps == 4 and cfg.metric_for_best_model == "eval_t_loss"
    assert cfg.data_seed == 7 and cfg.bf16 is False  # precision "auto" on a CPU: fp32
    no_eval = make_sft_config(opts, tmp_path, metric=None, has_eval=False)
    assert no_eval.eval_strategy == "no" and no_eval.eval_steps is None and not no_eval.load_best_model_at_end


def test_grpo_config_carries_our_values(tmp_path):
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.grpo import grpo_args
    from sidreasoner_core.sid import Catalogue

    cfg = GRPOStageConfig(num_generations=4, prompts_per_step=2, per_device_train_batch_size=2, temperature=0.7,
                          top_p=0.9, beta=0.01, epsilon=0.3, learning_rate=2e-6, max_completion_length=24,
                          num_iterations=2, loss_type="grpo", scale_rewards="batch", max_steps=3, save_steps=2,
                          warmup_ratio=0.1, eval_steps=99, seed=5)
    args = grpo_args(cfg, tmp_path, Catalogue({"x": "<a_1><b_2>"}), [1.0, 0.1])
    assert (args.num_generations, args.temperature, args.top_p, args.beta, args.epsilon) == (4, 0.7, 0.9, 0.01, 0.3)
    assert (args.learning_rate, args.max_completion_length, args.num_iterations) == (2e-6, 24, 2)
    assert (args.loss_type, args.scale_rewards, args.max_steps, args.save_steps, args.seed) == ("grpo", "batch", 3, 2, 5)
    assert args.warmup_steps == 0.1 and args.lr_scheduler_type == "constant_with_warmup"
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 8   # the group, from batch_plan
    assert args.eval_steps != 99 and args.reward_weights == [1.0, 0.1]                 # ours, not TRL's
