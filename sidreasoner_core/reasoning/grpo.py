"""GRPO over reasoning-then-SID rollouts with TRL's `GRPOTrainer` (SPEC §5).

Rollouts are sampled by transformers `generate` (CPU, tests) or by vLLM (`use_vllm`, colocate or
server mode, GPU). Multi-GPU ZeRO runs come from launching this same code under an accelerate
config (see `stage.py`); nothing here imports vLLM or DeepSpeed unless the config asks for them.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .. import sid as sidlib
from .config import GRPOStageConfig
from .rewards import THINK_CLOSE, reward_functions

log = logging.getLogger(__name__)


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def batch_plan(cfg: GRPOStageConfig, world_size: int = 1) -> dict:
    """Translate the paper's units (prompts per step x group size) into TRL batch settings."""
    completions = cfg.prompts_per_step * cfg.num_generations
    per_device = min(cfg.per_device_train_batch_size, completions // world_size or 1)
    if completions % (per_device * world_size):
        raise ValueError(f"prompts_per_step x num_generations = {completions} completions is not divisible by "
                         f"per_device_train_batch_size x processes = {per_device} x {world_size}")
    return {"per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": completions // (per_device * world_size)}


def _trie_regex(node, level: int) -> str:
    """The catalogue trie as a nested alternation (one branch per code: grows with the trie, not L x N)."""
    if not node.children:
        return ""
    branches = [re.escape(sidlib.token(level, code)) + _trie_regex(child, level + 1)
                for code, child in sorted(node.children.items())]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def vllm_sid_regex(catalogue: sidlib.Catalogue) -> str:
    """A regex for vLLM structured outputs: free reasoning, then exactly one catalogue SID.
    (`[\\s\\S]` rather than a DOTALL flag: guided-decoding regex engines do not all take flags.)"""
    return rf"[\s\S]*{re.escape(THINK_CLOSE)}\s*{_trie_regex(catalogue.root, 0)}"


def grpo_args(cfg: GRPOStageConfig, output_dir: Path, catalogue: sidlib.Catalogue, reward_weights: list[float],
              world_size: int = 1):
    from trl import GRPOConfig

    gpu = has_gpu()
    precision = cfg.cluster.precision
    if precision == "auto":
        precision = "bf16" if gpu and _bf16_ok() else "fp32"
    bf16, fp16 = precision == "bf16", precision == "fp16"
    extra = {}
    if cfg.use_vllm:
        if not gpu:
            raise RuntimeError("grpo.use_vllm needs a GPU (vLLM rollouts); set use_vllm: false on CPU")
        extra.update(use_vllm=True, vllm_mode=cfg.vllm_mode, vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
        if cfg.vllm_server_base_url:
            extra["vllm_server_base_url"] = cfg.vllm_server_base_url
        if cfg.constrained_sid:
            extra["vllm_structured_outputs_regex"] = vllm_sid_regex(catalogue)
    return GRPOConfig(
        output_dir=str(output_dir),
        **batch_plan(cfg, world_size),
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup" if cfg.warmup_ratio else "constant",  # paper: fixed lr
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        max_completion_length=cfg.max_completion_length,
        num_iterations=cfg.num_iterations,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=reward_weights,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        use_cpu=not gpu,
        bf16=bf16,
        fp16=fp16,
        activation_checkpointing=cfg.cluster.gradient_checkpointing,  # transformers 5 name
        report_to="none",
        model_init_kwargs={"dtype": "bfloat16" if bf16 else "float32"},  # fp16 trains fp32 masters
        **extra,
    )


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def sid_logits_processor(tokenizer, catalogue: sidlib.Catalogue):
    """The transformers-path rollout constraint (evaluation's trie processor, started after `</think>`)."""
    from .constrained import thinking_sid_logits_processor

    return thinking_sid_logits_processor(tokenizer, catalogue)


def make_trainer(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
                 output_dir: Path, callbacks: list | None = None, world_size: int = 1):
    """A ready `GRPOTrainer` (plus the optional constrained-rollout hook)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    funcs, weights = reward_functions(catalogue, rule=cfg.reward.rule, stepwise_values=cfg.reward.stepwise_values,
                                      format_weight=cfg.reward.format_weight, strict=cfg.reward.strict_answer)
    args = grpo_args(cfg, output_dir, catalogue, weights, world_size)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    processor = None
    if cfg.constrained_sid and not cfg.use_vllm:
        processor = sid_logits_processor(tokenizer, catalogue)
    trainer_cls = _constrained_trainer_class() if processor is not None else GRPOTrainer
    # beta > 0 needs a reference model: TRL rebuilds it from a path, so pass the directory, not a module.
    trainer = trainer_cls(model=str(model_dir), reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer,
                          callbacks=callbacks or [])
    if processor is not None:
        trainer.sid_logits_processor = processor
    return trainer


@functools.lru_cache(maxsize=1)
def _constrained_trainer_class():
    from transformers import LogitsProcessorList
    from trl import GRPOTrainer

    class ConstrainedGRPOTrainer(GRPOTrainer):
        """Adds a logits processor to transformers rollouts (TRL's generation config cannot carry one)."""

        sid_logits_processor: Callable | None = None

        def _generate_single_turn(self, *args, **kwargs):
            model = self.accelerator.unwrap_model(self.model_wrapped)
            model.generate = functools.partial(type(model).generate, model,
                                               logits_processor=LogitsProcessorList([self.sid_logits_processor]))
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                del model.generate  # back to the class method

    return ConstrainedGRPOTrainer


def last_checkpoint(output_dir: Path) -> str | None:
    """Newest complete checkpoint (a kill during a save leaves a partial one, which is removed)."""
    from ..align.sft import last_complete_checkpoint

    return last_complete_checkpoint(output_dir)


def train(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
          output_dir: Path, final_dir: Path, callbacks: list | None = None) -> dict:
    """Run (or resume) GRPO; save the final policy (model + tokenizer) to `final_dir`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = make_trainer(cfg, model_dir, train_rows, catalogue, output_dir, callbacks, world_size)
    resume = last_checkpoint(output_dir) if cfg.resume else None
    if resume:
        log.info("grpo: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(final_dir))  # gathers ZeRO-3 shards; writes on the main process
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(final_dir))
    return {"train_steps": trainer.state.global_step, "train_runtime_s": result.metrics.get("train_runtime", 0.0),
            "resumed_from_step": int(resume.rsplit("-", 1)[-1]) if resume else 0}


# ---------------------------------------------------------------- multi-GPU launch

WORKER_ENV = "SIDREASONER_GRPO_WORKER"  # set inside `accelerate launch` workers: never re-launch
JOB_FILE = "grpo_job.json"


def needs_launch(cfg: GRPOStageConfig) -> bool:
    return (cfg.cluster.num_gpus > 1 or cfg.cluster.deepspeed != "none") and not os.environ.get(WORKER_ENV)


def launch_command(job: Path, cfg: GRPOStageConfig) -> list[str]:
    """`accelerate launch` of this module with the alignment's accelerate config for the ZeRO stage."""
    from ..align.launch import accelerate_config

    precision = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}.get(cfg.cluster.precision, "bf16")
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config(cfg.cluster.deepspeed)),
            "--num_processes", str(cfg.cluster.num_gpus), "--mixed_precision", precision,
            "-m", "sidreasoner_core.reasoning.grpo", str(job)]


def write_job(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
              output_dir: Path, final_dir: Path, curves_path: Path | None, eval_rows: list[dict]) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    job = {"config": cfg.model_dump(mode="json"), "model_dir": str(model_dir), "train_rows": train_rows,
           "sid_by_item": catalogue.sid_by_item, "output_dir": str(output_dir), "final_dir": str(final_dir),
           "curves_path": str(curves_path) if curves_path else None, "eval_rows": eval_rows}
    path = output_dir / JOB_FILE
    path.write_text(json.dumps(job))
    return path


def launch(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
           output_dir: Path, final_dir: Path, curves_path: Path | None = None, eval_rows: list[dict] = ()) -> dict:
    """Run GRPO in `num_gpus` processes (DDP or DeepSpeed ZeRO); returns what `train` returns."""
    job = write_job(cfg, model_dir, train_rows, catalogue, output_dir, final_dir, curves_path, list(eval_rows))
    cmd = launch_command(job, cfg)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, WORKER_ENV: "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"multi-process GRPO failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads((output_dir / "grpo_result.json").read_text())


def worker_main(job_path: str) -> None:
    """Runs in every launched process: the same `train`, with the callbacks rebuilt from the job."""
    from .callbacks import CurveLog, curve_callback, recall_callback

    job = json.loads(Path(job_path).read_text())
    cfg = GRPOStageConfig.model_validate(job["config"])
    catalogue = sidlib.Catalogue(job["sid_by_item"])
    callbacks = []
    if job["curves_path"]:
        curves = CurveLog(job["curves_path"])
        callbacks.append(curve_callback(curves))
        if job["eval_rows"] and cfg.cluster.deepspeed != "zero3":
            # rank-0 generation needs whole weights: with ZeRO-3 shards the evaluation stage measures instead
            callbacks.append(recall_callback(curves, job["eval_rows"], list(catalogue.item_by_sid), cfg.eval_steps,
                                             cfg.eval_max_reasoning_tokens or cfg.max_completion_length,
                                             cfg.eval_beams))
    info = train(cfg, Path(job["model_dir"]), job["train_rows"], catalogue, Path(job["output_dir"]),
                 Path(job["final_dir"]), callbacks)
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(job["output_dir"]) / "grpo_result.json").write_text(json.dumps(info))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker_main(sys.argv[1])
