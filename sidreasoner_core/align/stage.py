"""Alignment stage entry points: `run(config, dataset, sids, corpus, out)` and the pipeline `step`.

Artifact (kind "model"):
  model/           Hugging Face directory: safetensors + tokenizer with the SID tokens
  sid_tokens.json  {"levels", "codes_per_level", "tokens"}: the added tokens in order
  metrics.json     per-task train/validation losses, GSM8K before/after, steps, task counts, wall time
  gsm8k.jsonl      the GSM8K answers before and after (for reading, small)
Checkpoints live in a work directory beside the output (`<out>.work`, or `work_dir`), so a killed
run resumes from its last checkpoint; it is removed once the artifact is published.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from .. import step_state
from ..artifacts import Artifact, ArtifactError, open_artifact, write_artifact
from ..corpus import KIND as CORPUS_KIND
from ..dataset import KIND as DATASET_KIND
from ..dataset import read_items, read_samples
from ..sid import KIND as SIDS_KIND
from ..sid import SIDS_FILE, read_sid_table
from ..training.checkpoints import CHECKPOINTS, persistent_store, work_dir_for
from ..training.runtime import has_gpu
from . import gsm8k as gsm8k_eval
from .config import EARLY_STOP_TASK, AlignConfig
from .tasks import TaskInputs, mix, read_corpus, read_jsonl, read_reasoning, task_pools

log = logging.getLogger(__name__)

KIND = "model"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
SID_TOKENS_FILE = "sid_tokens.json"
GSM8K_FILE = "gsm8k.jsonl"
REPO = Path(__file__).resolve().parents[2]


class AlignError(ValueError):
    pass


def _data_path(p: str) -> Path:
    """A config path: as given, else relative to the repository (sample data ships there)."""
    path = Path(p)
    if path.exists() or path.is_absolute():
        return path
    return REPO / path


def build_inputs(config: AlignConfig, dataset_dir: Path, sid_by_item: dict[str, str],
                 corpus_dir: Path | None) -> TaskInputs:
    ratios = config.effective_ratios()
    item_texts, narratives = read_corpus(corpus_dir)
    gsm_train = read_jsonl(_data_path(config.gsm8k_train)) if ratios.get("gsm8k", 1.0) > 0 else []
    needs_test = config.gsm8k_eval_n > 0 or (gsm_train and (config.eval_tasks is None or "gsm8k" in config.eval_tasks))
    gsm_test = read_jsonl(_data_path(config.gsm8k_test)) if needs_test else []
    return TaskInputs(items=read_items(dataset_dir), sid_by_item=sid_by_item,
                      train=read_samples(dataset_dir, "train"), valid=read_samples(dataset_dir, "valid"),
                      item_texts=item_texts, narratives=narratives, gsm8k_train=gsm_train, gsm8k_test=gsm_test,
                      reasoning=read_reasoning(corpus_dir) if ratios.get("user_reasoning", 1.0) > 0
                      or config.scratch_vocab_size else None)


def training_records(config: AlignConfig, dataset_dir: Path, sid_by_item: dict[str, str], corpus_dir: Path | None):
    """(inputs, train, evals, counts): the multi-task records alignment trains on (paper §3.2), mixed by
    the config's task ratios."""
    inputs = build_inputs(config, dataset_dir, sid_by_item, corpus_dir)
    pools = task_pools(inputs, config.max_history, config.eval_max_per_task, config.seed, config.reasoning_max_words)
    train, evals, counts = mix(pools, config.effective_ratios(), config.max_per_task, config.eval_max_per_task,
                               config.eval_tasks, config.seed)
    return inputs, train, evals, counts


def vocabulary_texts(inputs: TaskInputs) -> list[str]:
    """What a scratch model's tokenizer learns its words from: the catalogue's titles and brands and the
    teacher's traces (whatever the ablation; S1 cold-starts on the same traces)."""
    items = inputs.items
    texts = items["title"].astype(str).tolist()
    if "brand" in items.columns:
        texts += items["brand"].fillna("").astype(str).tolist()
    if inputs.reasoning is not None:
        texts += inputs.reasoning["reasoning"].astype(str).tolist()
    return texts


def _to_accelerator(model) -> None:
    """GSM8K generation on the GPU when there is one (the Trainer moves the model there anyway)."""
    if has_gpu():
        model.to("cuda")


def run(config: AlignConfig, dataset: Artifact, sids: Artifact, corpus: Artifact | None, out: str | Path,
        model_ref: str | None = None, work_dir: str | Path | None = None, tracker=None,
        callbacks=()) -> Artifact:
    from ..models import is_scratch, load_model, scratch_with_vocabulary
    from ..training.sft import save_result, train_sft

    t0 = time.time()
    out = str(out)
    ref = model_ref or config.model
    table = read_sid_table(sids.path)
    inputs, train, evals, counts = training_records(config, dataset.path, table.sid_by_item,
                                                    corpus.path if corpus else None)
    if not train:
        raise AlignError("no training records: every task ratio is 0 or every pool is empty")
    early = EARLY_STOP_TASK if any(r["task"] == EARLY_STOP_TASK for r in evals) else None
    log.info("align: %s", json.dumps(counts))

    gsm_rows = inputs.gsm8k_test[:config.gsm8k_eval_n]
    if config.scratch_vocab_size and is_scratch(ref):
        ref = str(scratch_with_vocabulary(ref, vocabulary_texts(inputs), config.scratch_vocab_size))
    model, tok = load_model(ref)
    if gsm_rows:
        _to_accelerator(model)
    before = gsm8k_eval.evaluate(model, tok, gsm_rows, config.gsm8k_max_new_tokens, config.gsm8k_batch_size,
                                 desc="gsm8k before") if gsm_rows else None
    in_process = config.train.num_gpus == 1 and config.train.deepspeed == "none"
    if not in_process:  # the launched workers need every GPU's memory: free this copy first
        import gc

        import torch

        model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    work = Path(work_dir) if work_dir else work_dir_for(out, config.work_dir)
    store = persistent_store("align", work / CHECKPOINTS, config.train.resume)
    tokens = table.vocabulary()
    result = train_sft(model if in_process else ref, train, evals, config.train, work,
                       tokenizer=tok if in_process else None, sid_tokens=tokens,
                       early_stopping_task=early, callbacks=callbacks, checkpoint_store=store)
    if gsm_rows:
        _to_accelerator(result.model)
    after = gsm8k_eval.evaluate(result.model, result.tokenizer, gsm_rows, config.gsm8k_max_new_tokens,
                                config.gsm8k_batch_size, desc="gsm8k after") if gsm_rows else None

    metrics = {**result.metrics(), **{k: float(v) for k, v in counts.items()},
               **{f"eval_loss_first_{t}": v for t, v in result.first_eval_losses.items()}}
    if before is not None:
        metrics.update(gsm8k_before=before["accuracy"], gsm8k_after=after["accuracy"], gsm8k_n=float(before["n"]))
    metrics["sid_tokens"] = float(len(tokens))
    metrics["resumed_from_step"] = float(result.resumed_from.rsplit("-", 1)[-1]) if result.resumed_from else 0.0
    metrics["wall_s"] = time.time() - t0
    if tracker is not None:
        for h in result.log_history:
            step = int(h.get("step", 0))
            tracker.log_metrics({k: v for k, v in h.items()
                                 if k == "loss" or k.startswith("loss_") or (k.startswith("eval_") and k.endswith("_loss"))},
                                step=step)
    parents = [a for a in (dataset, sids, corpus) if a is not None]
    with write_artifact(out, kind=KIND, config=config, parents=parents,
                        extra={"model_ref": str(ref), "metrics": metrics}) as d:
        save_result(result, d / MODEL_DIR)
        (d / SID_TOKENS_FILE).write_text(json.dumps(table.token_info()))
        (d / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if before is not None:
            with open(d / GSM8K_FILE, "w") as f:
                for when, res in (("before", before), ("after", after)):
                    for o in res["outputs"]:
                        f.write(json.dumps({"when": when, **o}) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # published: the checkpoints are no longer needed
    step_state.clear(store and store.uri)
    log.info("align metrics: %s", json.dumps(metrics, sort_keys=True))
    return open_artifact(out, kind=KIND)


def open_corpus(corpus_uri: str | None) -> Artifact | None:
    """The enrichment corpus if one was produced; an empty/absent URI means none."""
    if not corpus_uri:
        return None
    p = Path(corpus_uri)
    if not corpus_uri.startswith("s3://") and (not p.exists() or (p.is_dir() and not any(p.iterdir()))):
        log.info("no corpus at %s: tasks 7-8 are skipped", corpus_uri)
        return None
    return open_artifact(corpus_uri, kind=CORPUS_KIND)


def step(config_json: str, dataset_uri: str, sids_uri: str, corpus_uri: str, out: str, model_ref: str = "",
         tracking_uri: str = "", parent_run_id: str = "", max_steps: int | None = None,
         num_gpus: int | None = None, **overrides) -> dict:
    """The pipeline step: config from the `align` section (+ typed overrides), tracked in MLflow."""
    from ..config import section
    from ..tracking import stage_run

    config = AlignConfig.build(section(config_json, "align"), source="config_json", model=model_ref or None,
                               train={"max_steps": max_steps, "num_gpus": num_gpus}, **overrides)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    sids = open_artifact(sids_uri, kind=SIDS_KIND)
    corpus = open_corpus(corpus_uri)
    with stage_run("align", config, tracking_uri, parent_run_id) as tracker:
        tracker.log_input(dataset, context="training", table="samples.parquet")
        tracker.log_input(sids, context="sids", table=SIDS_FILE)
        if corpus is not None:
            tracker.log_input(corpus, context="corpus")
        art = run(config, dataset, sids, corpus, out, tracker=tracker)
        metrics = art.manifest["metrics"]
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("gsm8k") or k == "wall_s"})
        tracker.log_output(art, files=(METRICS_FILE, SID_TOKENS_FILE))
    return metrics


__all__ = ["run", "step", "build_inputs", "KIND", "MODEL_DIR", "ArtifactError"]
