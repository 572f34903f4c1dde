"""The SFT machinery of every SFT stage: SID-language alignment (paper §3.2.2-3.2.3) and the
cold-start reasoning activation (paper §3.3.1).

    from sidreasoner_core.training.sft import SFTOptions, SFTResult, train_sft, save_result, build_trainer

    result = train_sft(
        "smollm2",                 # model reference (models.resolve_model_dir), a directory, or a loaded model
        train_records,             # list[dict] | datasets.Dataset of records (below)
        eval_records,              # same, or None; grouped by "task" -> one validation loss per task
        SFTOptions(learning_rate=1e-5, num_train_epochs=1, max_steps=-1),
        out_dir,                   # checkpoints live in out_dir/checkpoints (resumable after a kill)
        checkpoint_store=store,    # optional training.checkpoints.CheckpointStore: each checkpoint copied there
        sid_tokens=sid.vocabulary(3, 256),   # added as ordinary tokens, embeddings resized (deterministic)
        early_stopping_task="sid_history_to_sid",  # validation loss that picks the best checkpoint
        callbacks=[...],           # extra transformers TrainerCallbacks (in-process runs only)
    )
    save_result(result, out_dir / "model")   # HF dir: safetensors + tokenizer (with the SID tokens)

    trainer, n_added = build_trainer(...same arguments...)  # configured, not trained (tests, custom loops)

A record is a dict with an optional "task" name (default "default") and one of
  {"prompt": [chat messages], "completion": [assistant message] | str}  loss on the completion only
      (+ "completion_context": str, the text the rendered response starts with that is given, not trained
      on: e.g. the model's own reasoning before the SID it is trained to answer)
  {"messages": [chat messages ending with the assistant turn]}          loss on the last assistant turn
  {"text": str}                                                          plain text, loss on every token
Chats are rendered with the tokenizer's chat template. The prompt is rendered with the generation
prompt and tokenized on its own, so the training tokens match what the model sees at inference.

Training runs through TRL's `SFTTrainer` on pre-tokenized rows (`input_ids`, `completion_mask`,
`task_id`); TRL turns the mask into labels (-100 outside the completion) and truncates to
`max_length`. Per-task training losses are logged as `loss_<task>`, validation losses as
`eval_<task>_loss`. With `num_gpus > 1` or a DeepSpeed stage the same training runs in
`accelerate launch` workers (`training.launch`); the caller gets the same `SFTResult`, and its
callbacks see the workers' logs replayed (`on_log` only: they ran in other processes).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

from . import launch as launcher
from .checkpoints import CHECKPOINTS, CheckpointStore, checkpoint_step, last_complete_checkpoint
from .options import SFTOptions
from .runtime import completion_only_logprobs, has_gpu, trainer_precision
from .sampling import OWN_SAMPLERS, own_sampler
from .trl_args import build_trl_config

log = logging.getLogger(__name__)

__all__ = ["SFTOptions", "SFTResult", "train_sft", "save_result", "tokenize_record", "build_dataset",
           "TaskCollator", "split_by_task", "build_trainer", "worker"]

DEFAULT_TASK = "default"


class SFTDataError(ValueError):
    """A record cannot be turned into training tokens (names the record index and field)."""


@dataclass
class SFTResult:
    model: Any
    tokenizer: Any
    global_step: int
    tasks: list[str]
    best_metric: float | None = None
    best_checkpoint: str | None = None
    resumed_from: str | None = None
    train_loss: float | None = None
    train_losses: dict[str, float] = field(default_factory=dict)   # last logged loss per task
    eval_losses: dict[str, float] = field(default_factory=dict)    # at the best (or last) evaluation
    first_eval_losses: dict[str, float] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    trainer: Any = None   # the TRL trainer (in-process runs); None after a multi-process launch

    def metrics(self) -> dict[str, float]:
        """Flat numeric figures for metrics.json / MLflow."""
        out: dict[str, float] = {"global_step": float(self.global_step)}
        if self.train_loss is not None:
            out["train_loss"] = self.train_loss
        if self.best_metric is not None:
            out["best_metric"] = self.best_metric
        out.update({f"train_loss_{t}": v for t, v in self.train_losses.items()})
        out.update({f"eval_loss_{t}": v for t, v in self.eval_losses.items()})
        return out


# ---------------------------------------------------------------- tokenization

def _render(tok, messages: list[dict], add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def tokenize_record(record: dict, tok, index: int = 0) -> tuple[list[int], list[int]]:
    """(input_ids, completion_mask) of one record; mask 1 = the token is trained on."""
    where = f"record {index} (task {record.get('task', DEFAULT_TASK)!r})"
    text = record.get("text")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise SFTDataError(f"{where}: field 'text' is empty or not a string")
        ids = _encode(tok, text)
        if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False) and ids[:1] != [tok.bos_token_id]:
            ids = [tok.bos_token_id] + ids
        if tok.eos_token_id is not None and ids[-1:] != [tok.eos_token_id]:
            ids.append(tok.eos_token_id)  # plain text ends like a document
        return ids, [1] * len(ids)
    if record.get("messages") is not None:
        msgs = list(record["messages"])
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        if last is None:
            raise SFTDataError(f"{where}: field 'messages' has no assistant turn")
        prompt, completion = msgs[:last], msgs[last:last + 1]
    elif record.get("prompt") is not None and record.get("completion") is not None:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
    else:
        raise SFTDataError(f"{where}: needs 'text', 'messages', or 'prompt' + 'completion'")
    prompt_text = _render(tok, list(prompt), add_generation_prompt=True)
    full_text = _render(tok, list(prompt) + list(completion), add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise SFTDataError(f"{where}: the chat template does not render the prompt as a prefix of the whole chat; "
                           "cannot locate the assistant response")
    prompt_ids = _encode(tok, prompt_text)
    response = full_text[len(prompt_text):]
    context = record.get("completion_context") or ""
    if not response.startswith(context):
        raise SFTDataError(f"{where}: field 'completion_context' is not how the rendered response starts")
    context_ids = _encode(tok, context) if context else []
    completion_ids = _encode(tok, response[len(context):])
    if not completion_ids:
        raise SFTDataError(f"{where}: empty assistant response")
    return (prompt_ids + context_ids + completion_ids,
            [0] * (len(prompt_ids) + len(context_ids)) + [1] * len(completion_ids))


def _records(data) -> list[dict]:
    if data is None:
        return []
    if hasattr(data, "to_list"):  # datasets.Dataset
        return data.to_list()
    return list(data)


def split_by_task(records: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r.get("task") or DEFAULT_TASK, []).append(r)
    return out


def build_dataset(records: Sequence[dict], tok, task_index: dict[str, int], desc: str = "tokenize",
                  max_length: int | None = None):
    """A datasets.Dataset of input_ids / completion_mask / task_id (tqdm progress). Rows whose
    response starts beyond `max_length` would train on nothing after truncation: they are dropped."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows: dict[str, list] = {"input_ids": [], "completion_mask": [], "task_id": []}
    dropped = 0
    for i, rec in enumerate(tqdm(records, desc=desc, disable=len(records) < 2000)):
        ids, mask = tokenize_record(rec, tok, i)
        if max_length is not None and not any(mask[:max_length]):
            dropped += 1
            continue
        rows["input_ids"].append(ids)
        rows["completion_mask"].append(mask)
        rows["task_id"].append(task_index[rec.get("task") or DEFAULT_TASK])
    if dropped:
        log.warning("%s: %d of %d records dropped (prompt alone fills max_length=%s)", desc, dropped, len(records),
                    max_length)
    return Dataset.from_dict(rows)


# ---------------------------------------------------------------- trainer pieces

def _trl():
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return SFTConfig, SFTTrainer, DataCollatorForLanguageModeling


def TaskCollator(pad_token_id: int):
    """TRL's language-modelling collator that also carries each row's task id."""
    _, _, Base = _trl()

    class _TaskCollator(Base):
        def torch_call(self, examples):
            import torch

            out = super().torch_call(examples)
            if "task_id" in examples[0]:
                out["task_id"] = torch.tensor([int(e["task_id"]) for e in examples])
            return out

    return _TaskCollator(pad_token_id=pad_token_id)


def _trainer_class():
    _, SFTTrainer, _ = _trl()

    class MultiTaskSFTTrainer(SFTTrainer):
        """SFTTrainer that logs the training loss per task (`loss_<task>`)."""

        task_names: list[str] = []
        sampling: str = "random"  # SFTOptions.sampling; the orders of training.sampling are ours

        def _get_train_sampler(self, train_dataset=None):
            if self.sampling not in OWN_SAMPLERS:
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return own_sampler(self.sampling, [len(ids) for ids in dataset["input_ids"]],
                               self.args.train_batch_size, self.args.gradient_accumulation_steps)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "task_id" not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + ["task_id"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            task_ids = inputs.pop("task_id", None)
            captured: list = []
            hook = None
            if task_ids is not None and self.model.training:
                # The fused LM head already returns per-token log-probs; a hook reads them at no extra cost.
                hook = self.model.register_forward_hook(lambda _m, _i, o: captured.append(o))
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                              num_items_in_batch=num_items_in_batch)
            finally:
                if hook is not None:
                    hook.remove()
            if captured:
                self._log_task_losses(captured[0], task_ids)
            return result

        def _log_task_losses(self, outputs, task_ids) -> None:
            log_probs = getattr(outputs, "log_probs", None)
            mask = getattr(outputs, "label_mask", None)
            if log_probs is None or mask is None:
                return
            with_tokens = mask.sum(-1).float()
            per_row = (-log_probs.detach().float() * mask).sum(-1)
            for tid in task_ids.unique().tolist():
                sel = task_ids.to(per_row.device) == tid
                n = with_tokens[sel].sum()
                if n > 0:
                    name = self.task_names[tid] if tid < len(self.task_names) else str(tid)
                    self._metrics["train"][f"loss_{name}"].append((per_row[sel].sum() / n).item())

    return MultiTaskSFTTrainer


def _early_stopping(patience: int):
    from transformers import EarlyStoppingCallback

    class TaskEarlyStopping(EarlyStoppingCallback):
        """Each validation task is evaluated separately; only the one holding the metric counts."""

        def on_evaluate(self, args, state, control, metrics, **kwargs):
            if args.metric_for_best_model in metrics:
                return super().on_evaluate(args, state, control, metrics, **kwargs)

    return TaskEarlyStopping(early_stopping_patience=patience)


def make_sft_config(opts: SFTOptions, output_dir: Path, metric: str | None, has_eval: bool):
    """TRL's SFTConfig from our options (same-named fields pass through, see `training.trl_args`)."""
    SFTConfig, _, _ = _trl()
    eval_strategy = opts.eval_strategy if has_eval else "no"
    # DeepSpeed comes from the accelerate config the run was launched with (training.launch), not from here.
    return build_trl_config(
        SFTConfig, opts,
        output_dir=str(output_dir),
        eval_strategy=eval_strategy,
        eval_steps=opts.eval_steps if eval_strategy == "steps" else None,
        save_strategy="epoch" if eval_strategy == "epoch" else "steps",
        save_steps=opts.eval_steps,
        load_best_model_at_end=bool(metric) and eval_strategy != "no",
        metric_for_best_model=metric if eval_strategy != "no" else None,
        greater_is_better=False if metric else None,
        data_seed=opts.seed,
        # ours, not a transformers strategy: the trainer's own sampler (`_trainer_class`)
        **({"train_sampling_strategy": "random"} if opts.sampling in OWN_SAMPLERS else {}),
        completion_only_loss=True,
        packing=False,
        report_to="none",
        use_cpu=not has_gpu(),
        dataloader_num_workers=0,
        eval_on_start=opts.eval_on_start and eval_strategy != "no",
        save_only_model=False,  # optimizer + scheduler + RNG states make the resume exact
        **trainer_precision(opts.precision),
    )


def _load(model, tokenizer, sid_tokens, seed: int = 42, init: str = "random"):
    from transformers import set_seed

    from ..models import add_sid_tokens, load_model

    set_seed(seed)  # the new SID embedding rows are random: make them reproducible
    if isinstance(model, (str, os.PathLike)):
        model, tok = load_model(str(model))
        tokenizer = tokenizer or tok
    if tokenizer is None:
        raise ValueError("train_sft: pass tokenizer= with an in-memory model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    added = add_sid_tokens(tokenizer, model, list(sid_tokens), mean_resizing=init == "mean") if sid_tokens else 0
    return model, tokenizer, added


def _eval_losses_at(history: list[dict], step: int | None, tasks: list[str]) -> dict[str, float]:
    rows = [h for h in history if any(k.startswith("eval_") and k.endswith("_loss") for k in h)]
    if step is not None:
        rows = [h for h in rows if h.get("step") == step] or rows
    if not rows:
        return {}
    merged: dict[str, float] = {}
    target_step = rows[-1].get("step")
    for h in rows:
        if h.get("step") == target_step:
            merged.update({k: v for k, v in h.items() if k.startswith("eval_") and k.endswith("_loss")})
    return {t: merged[f"eval_{t}_loss"] for t in tasks if f"eval_{t}_loss" in merged}


def build_trainer(model, train_records, eval_records, opts: SFTOptions, out_dir: str | Path, *, tokenizer=None,
                  sid_tokens: Sequence[str] | None = None, early_stopping_task: str | None = None,
                  callbacks: Sequence = ()):
    """(trainer, n_sid_tokens_added): the configured TRL trainer, datasets tokenized and prepared,
    not yet trained (in-process only; `train_sft` is the usual entry point)."""
    out_dir = Path(out_dir)
    train_list, eval_list = _records(train_records), _records(eval_records)
    model, tok, added = _load(model, tokenizer, sid_tokens, opts.seed, opts.sid_embedding_init)
    tasks = sorted(split_by_task(train_list + eval_list))
    index = {t: i for i, t in enumerate(tasks)}
    train_ds = build_dataset(train_list, tok, index, "tokenize train", opts.max_length)
    if len(train_ds) == 0:
        raise SFTDataError(f"no training record fits max_length={opts.max_length} (every prompt fills it)")
    eval_by_task = {t: build_dataset(rs, tok, index, f"tokenize eval {t}", opts.max_length)
                    for t, rs in split_by_task(eval_list).items()}
    eval_by_task = {t: ds for t, ds in eval_by_task.items() if len(ds)}

    metric = None
    if eval_by_task:
        if early_stopping_task and early_stopping_task not in eval_by_task:
            if early_stopping_task not in split_by_task(eval_list):
                raise SFTDataError(f"early_stopping_task {early_stopping_task!r} has no validation records "
                                   f"(validation tasks: {sorted(eval_by_task)})")
            log.warning("early stopping off: no %s validation record fits max_length=%d",
                        early_stopping_task, opts.max_length)
        elif early_stopping_task:
            metric = f"eval_{early_stopping_task}_loss"
        elif len(eval_by_task) == 1:
            metric = f"eval_{next(iter(eval_by_task))}_loss"
    ckpt_dir = out_dir / CHECKPOINTS
    args = make_sft_config(opts, ckpt_dir, metric, bool(eval_by_task))
    cbs = list(callbacks)
    if args.metric_for_best_model and opts.early_stopping_patience:  # not when evaluation is off
        cbs.append(_early_stopping(opts.early_stopping_patience))

    Trainer = _trainer_class()
    Trainer.task_names = tasks
    Trainer.sampling = opts.sampling
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      eval_dataset=eval_by_task or None, processing_class=tok,
                      data_collator=TaskCollator(tok.pad_token_id), callbacks=cbs)
    return trainer, added


RESULT_FILE = "sft_result.json"   # the run's figures, written by the (main) training process
LAUNCH_DIR = "_launch"            # job + records handed to launched workers
FINAL_DIR = "final"               # the model the workers save (gathered from ZeRO-3 shards)


def train_sft(model, train_records, eval_records, opts: SFTOptions, out_dir: str | Path, *,
              tokenizer=None, sid_tokens: Sequence[str] | None = None, early_stopping_task: str | None = None,
              callbacks: Sequence = (), checkpoint_store: CheckpointStore | None = None) -> SFTResult:
    """Fine-tune `model` on the records; see the module docstring. Resumes from the last complete
    checkpoint in out_dir/checkpoints when `opts.resume` (the default); with a `checkpoint_store`
    every saved checkpoint is also copied there (a retried pod restores it: `checkpoints.persistent_store`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_list, eval_list = _records(train_records), _records(eval_records)
    if not train_list:
        raise SFTDataError("train_sft: no training records")
    if launcher.needs_launch(opts.num_gpus, opts.deepspeed):
        return _train_in_workers(model, train_list, eval_list, opts, out_dir, tokenizer=tokenizer,
                                 sid_tokens=sid_tokens, early_stopping_task=early_stopping_task, callbacks=callbacks,
                                 checkpoint_store=checkpoint_store)

    store_cb = [checkpoint_store.callback()] if checkpoint_store is not None else []
    trainer, added = build_trainer(model, train_list, eval_list, opts, out_dir, tokenizer=tokenizer,
                                   sid_tokens=sid_tokens, early_stopping_task=early_stopping_task,
                                   callbacks=[*callbacks, *store_cb])
    tok, tasks, ckpt_dir = trainer.processing_class, trainer.task_names, out_dir / CHECKPOINTS
    resume = last_complete_checkpoint(ckpt_dir) if opts.resume else None
    if resume:
        log.info("resuming from %s", resume)
    with completion_only_logprobs():
        out = trainer.train(resume_from_checkpoint=resume)

    state = trainer.state
    history = list(state.log_history)
    best_step = checkpoint_step(state.best_model_checkpoint) if state.best_model_checkpoint else None
    train_losses: dict[str, float] = {}
    for h in history:
        train_losses.update({k[len("loss_"):]: v for k, v in h.items() if k.startswith("loss_")})
    first_evals = [h.get("step") for h in history if any(k.startswith("eval_") and k.endswith("_loss") for k in h)]
    result = SFTResult(
        model=trainer.model, tokenizer=tok, global_step=state.global_step, tasks=tasks,
        best_metric=state.best_metric, best_checkpoint=state.best_model_checkpoint, resumed_from=resume,
        train_loss=out.training_loss, train_losses=train_losses,
        eval_losses=_eval_losses_at(history, best_step, tasks),
        first_eval_losses=_eval_losses_at(history, first_evals[0], tasks) if first_evals else {},
        log_history=history, trainer=trainer)
    if trainer.is_world_process_zero():
        (out_dir / RESULT_FILE).write_text(json.dumps(
            {"metrics": result.metrics(), "best_checkpoint": result.best_checkpoint, "resumed_from": resume,
             "tasks": tasks, "sid_tokens_added": added, "eval_losses": result.eval_losses,
             "first_eval_losses": result.first_eval_losses, "log_history": history}, indent=1, default=str))
    return result


# ---------------------------------------------------------------- multi-process (training.launch)

def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_job_inputs(model, train: list[dict], evals: list[dict], opts: SFTOptions, out_dir: Path, *,
                     sid_tokens=None, early_stopping_task=None, tokenizer=None,
                     checkpoint_store: CheckpointStore | None = None) -> tuple[Path, dict]:
    """(job dir, payload): the records as JSON lines beside the job, an in-memory model saved as a directory."""
    d = Path(out_dir) / LAUNCH_DIR
    d.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, (str, os.PathLike)):  # an in-memory model crosses the process boundary as a directory
        model.save_pretrained(d / "base")
        tokenizer.save_pretrained(d / "base")
        model = d / "base"
    _write_jsonl(d / "train.jsonl", train)
    _write_jsonl(d / "eval.jsonl", evals)
    payload = {"model": str(model), "opts": opts.model_dump(mode="json"), "out_dir": str(out_dir),
               "sid_tokens": list(sid_tokens) if sid_tokens else None, "early_stopping_task": early_stopping_task,
               "checkpoint_store": checkpoint_store.uri if checkpoint_store is not None else None}
    return d, payload


def worker(payload: dict, job_dir: Path) -> None:
    """What every launched process runs: the same `train_sft`, then one save of the (gathered) model."""
    opts = SFTOptions.model_validate(payload["opts"])
    result = train_sft(payload["model"], _read_jsonl(job_dir / "train.jsonl"), _read_jsonl(job_dir / "eval.jsonl"),
                       opts, payload["out_dir"], sid_tokens=payload["sid_tokens"],
                       early_stopping_task=payload["early_stopping_task"],
                       checkpoint_store=CheckpointStore(payload["checkpoint_store"]) if payload.get("checkpoint_store") else None)
    final = Path(payload["out_dir"]) / FINAL_DIR
    result.trainer.save_model(str(final))  # gathers ZeRO-3 shards; writes on the main process only
    if result.trainer.is_world_process_zero():
        result.tokenizer.save_pretrained(final)


def replay_logs(callbacks: Sequence, history: list[dict]) -> None:
    """Feed the workers' log history to callbacks that record logs (`on_log`), in step order."""
    for cb in callbacks:
        if not hasattr(cb, "on_log"):
            continue
        for h in history:
            # the launching process replays as the main process (callbacks write on rank 0 only)
            state = SimpleNamespace(global_step=int(h.get("step", 0)), is_world_process_zero=True)
            cb.on_log(None, state, None, logs=dict(h))


def _train_in_workers(model, train, evals, opts: SFTOptions, out_dir: Path, *, sid_tokens=None,
                      early_stopping_task=None, tokenizer=None, callbacks: Sequence = (),
                      checkpoint_store: CheckpointStore | None = None) -> SFTResult:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_dir, payload = write_job_inputs(model, train, evals, opts, out_dir, sid_tokens=sid_tokens,
                                        early_stopping_task=early_stopping_task, tokenizer=tokenizer,
                                        checkpoint_store=checkpoint_store)
    launcher.launch("sidreasoner_core.training.sft:worker", payload, job_dir, num_gpus=opts.num_gpus,
                    deepspeed=opts.deepspeed, precision=opts.precision)
    final = Path(out_dir) / FINAL_DIR
    info = json.loads((Path(out_dir) / RESULT_FILE).read_text())
    m = info["metrics"]
    history = info.get("log_history", [])
    replay_logs(callbacks, history)
    return SFTResult(
        model=AutoModelForCausalLM.from_pretrained(final), tokenizer=AutoTokenizer.from_pretrained(final),
        global_step=int(m["global_step"]), tasks=info["tasks"], best_metric=m.get("best_metric"),
        best_checkpoint=info.get("best_checkpoint"), resumed_from=info.get("resumed_from"),
        train_loss=m.get("train_loss"),
        train_losses={k[len("train_loss_"):]: v for k, v in m.items() if k.startswith("train_loss_")},
        eval_losses=info.get("eval_losses", {}), first_eval_losses=info.get("first_eval_losses", {}),
        log_history=history)


def save_result(result: SFTResult, dest: str | Path) -> Path:
    """Write the trained model + tokenizer as a Hugging Face directory (safetensors)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(dest)
    result.tokenizer.save_pretrained(dest)
    return dest
