"""Reasoning stage entry points: cold-start activation and GRPO (`run_*` library calls, `*_step` pipeline steps).

Both write a "model" artifact:
  model/           Hugging Face directory (safetensors + tokenizer with the SID tokens)
  sid_tokens.json  the SID tokens (copied from the input model artifact, or rebuilt from the SID table)
  metrics.json     flat numeric figures of the run
  curves.jsonl     every logged value by step (GRPO: reward and its parts, KL, lengths, valid-SID
                   share, Recall@10 on a fixed validation subset; cold-start: loss, lr)
  curves.md        the curves as a small Markdown table (the pipeline's report output)
  curves.png       the headline curves plotted against the step (paper Figure 6 style)
Checkpoints live in a work directory beside the output (`<out>.work`, or `work_dir`): a killed run
resumes from its last checkpoint, and the directory is removed once the artifact is published.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import step_state
from ..artifacts import MANIFEST, Artifact, open_artifact, write_artifact
from ..corpus import KIND as CORPUS_KIND
from ..corpus import USER_REASONING_FILE
from ..dataset import KIND as DATASET_KIND
from ..dataset import SAMPLES_FILE, read_samples
from ..sid import KIND as SIDS_KIND
from ..sid import SIDTable, read_sid_table
from ..training import launch as launcher
from ..training.checkpoints import CHECKPOINTS, persistent_store, work_dir_for
from ..training.runtime import cpu_threads
from .callbacks import CURVES_FILE, RECALL_KEY, CurveLog, best_saved, curve_callback, recall_callback
from .config import ColdStartConfig, GRPOStageConfig
from .samples import ReasoningDataError, sid_rows

log = logging.getLogger(__name__)

KIND = "model"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CURVES_MD = "curves.md"
SID_TOKENS_FILE = "sid_tokens.json"


def mlflow_name(key: str) -> str:
    """MLflow metric names allow letters, digits, `_-. :/`: `eval/recall@10` -> `eval/recall_at_10`."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key.replace("@", "_at_"))


def _forward(tracker):
    if tracker is None:
        return None
    return lambda values, step: tracker.log_metrics({mlflow_name(k): v for k, v in values.items()}, step=step)


def _model_ref(config_model: str | None, model_in: Artifact | str) -> str:
    if config_model:
        return config_model
    return str(model_in.path if isinstance(model_in, Artifact) else model_in)


def _sid_tokens(model_in: Artifact | str, table: SIDTable) -> dict:
    """The SID token list of the input model artifact, else the SID table's."""
    if isinstance(model_in, Artifact) and (model_in.path / SID_TOKENS_FILE).is_file():
        return json.loads((model_in.path / SID_TOKENS_FILE).read_text())
    return table.token_info()


def curves_markdown(rows: list[dict], keys: tuple[str, ...], title: str) -> str:
    present = [k for k in keys if any(k in r for r in rows)]
    lines = [f"# {title}", "", "| step | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for r in rows:
        if any(k in r for k in present):
            cells = [f"{r[k]:.4g}" if k in r else "" for k in present]
            lines.append(f"| {r['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict], panels: tuple[tuple[str, ...], ...], path: Path, title: str) -> bool:
    """One small panel per group of keys against the step (paper Figure 6 style); False if nothing to plot."""
    panels = tuple(p for p in panels if any(k in r for r in rows for k in p))
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


@dataclass(frozen=True)
class CurveSpec:
    """What a stage's curves report shows: the title, the table's columns, the plot's panels."""

    title: str
    keys: tuple[str, ...]
    panels: tuple[tuple[str, ...], ...] = ()


GRPO_PANELS = (("reward", "rewards/prefix_reward/mean", "rewards/validity_reward/mean",
                "rewards/likelihood_reward/mean"),
               ("reasoning/words", "eval/reasoning_tokens"), (RECALL_KEY, "eval/ndcg@10"))
SELF_TRACES_CURVE_PREFIX = "self_traces/"  # the second SFT of `coldstart.self_traces`, after the first's steps
COLDSTART_PANELS = (("loss", SELF_TRACES_CURVE_PREFIX + "loss"),)
CURVES_PNG = "curves.png"

GRPO_CURVE_KEYS = ("reward", "rewards/prefix_reward/mean", "rewards/validity_reward/mean",
                   "rewards/likelihood_reward/mean", "frac_reward_zero_std", "sid/valid_share",
                   "sid/parsed_share", "reasoning/think_closed_share", "completions/clipped_ratio",
                   "reasoning/words", "completions/mean_length", "kl", RECALL_KEY, "eval/ndcg@10",
                   "eval/reasoning_tokens")
COLDSTART_CURVE_KEYS = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "train_loss",
                        SELF_TRACES_CURVE_PREFIX + "loss")
GRPO_CURVES = CurveSpec("GRPO", GRPO_CURVE_KEYS, GRPO_PANELS)
COLDSTART_CURVES = CurveSpec("Cold-start activation", COLDSTART_CURVE_KEYS, COLDSTART_PANELS)


def _publish(out: str, config, *, parents: list, model_ref: str, model, tokenizer=None, sid_tokens: dict,
             metrics: dict, rows: list[dict], curves: CurveSpec, skipped: bool = False) -> Artifact:
    """Write the model artifact. `model` is a loaded model (saved with `tokenizer`) or an HF directory
    (copied); `rows` are the curve records (`CurveLog.rows()`), written as given."""
    extra = {"model_ref": model_ref, **({"skipped": True} if skipped else {}), "metrics": metrics}
    with write_artifact(out, kind=KIND, config=config, parents=[a for a in parents if isinstance(a, Artifact)],
                        extra=extra) as d:
        if isinstance(model, (str, Path)):
            shutil.copytree(model, d / MODEL_DIR)
        else:
            model.save_pretrained(d / MODEL_DIR)
            tokenizer.save_pretrained(d / MODEL_DIR)
        (d / SID_TOKENS_FILE).write_text(json.dumps(sid_tokens))
        (d / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        with open(d / CURVES_FILE, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        (d / CURVES_MD).write_text(curves_markdown(rows, curves.keys, curves.title))
        plot_curves(rows, curves.panels, d / CURVES_PNG, curves.title)
    return open_artifact(out, kind=KIND)


def _pass_through(config, model_in: Artifact | str, table: SIDTable, out: str, parents: list,
                  curves: CurveSpec) -> Artifact:
    """A disabled stage (ablation switch): the input model republished unchanged, so the DAG keeps its shape."""
    from ..models import resolve_model_dir

    ref = _model_ref(config.model, model_in)
    log.info("%s disabled: passing %s through", curves.title, ref)
    return _publish(out, config, parents=parents, model_ref=ref, model=resolve_model_dir(ref),
                    sid_tokens=_sid_tokens(model_in, table), metrics={"skipped": 1.0}, rows=[], curves=curves,
                    skipped=True)


# ---------------------------------------------------------------- cold-start

def run_coldstart(config: ColdStartConfig, model_in: Artifact | str, dataset: Artifact | None, sids: Artifact,
                  corpus: Artifact, out: str, work_dir: str | Path | None = None, tracker=None) -> Artifact:
    """SFT on `<think>\\n{reasoning}\\n</think>\\n\\n{SID}` targets from the corpus's reasoning traces."""
    from . import coldstart

    t0 = time.time()
    out = str(out)
    table = read_sid_table(sids.path)
    parents = [model_in, dataset, sids, corpus]
    if not config.enabled:
        return _pass_through(config, model_in, table, out, parents, COLDSTART_CURVES)
    source = f"{corpus.uri}/{USER_REASONING_FILE}"
    reasoning = coldstart.read_reasoning(corpus.path)
    recs = coldstart.records(reasoning, table.sid_by_item, config, source=source)
    work = Path(work_dir) if work_dir else work_dir_for(out, config.work_dir)
    curves = CurveLog(work / CURVES_FILE, forward=_forward(tracker))
    tokens = _sid_tokens(model_in, table)
    ref = _model_ref(config.model, model_in)
    store = persistent_store("coldstart", work / CHECKPOINTS, config.train.resume, beside=work)
    stores = [store]
    with cpu_threads(config.cpu_threads):
        result = coldstart.train(config, ref, recs, work, sid_tokens=tokens["tokens"],
                                 callbacks=[curve_callback(curves)], checkpoint_store=store)
        metrics = {**result.metrics(), "samples": float(len(recs))}
        if config.self_traces.enabled:
            result, own_metrics, own_store = _answer_after_own_traces(config, result, reasoning, table, work, source,
                                                                      curves)
            metrics.update(own_metrics)
            stores.append(own_store)
    rows = curves.rows()  # both SFTs' (the second's under `self_traces/`)
    losses = [r["loss"] for r in rows if "loss" in r]
    if losses:
        metrics.update(loss_first=losses[0], loss_last=losses[-1])
    metrics["wall_s"] = time.time() - t0
    art = _publish(out, config, parents=parents, model_ref=ref, model=result.model, tokenizer=result.tokenizer,
                   sid_tokens=tokens, metrics=metrics, rows=rows, curves=COLDSTART_CURVES)
    shutil.rmtree(work, ignore_errors=True)
    for s in stores:
        step_state.clear(s and s.uri)  # published: a succeeded step is not retried
    log.info("coldstart metrics: %s", json.dumps(metrics, sort_keys=True))
    return art


def _answer_after_own_traces(config: ColdStartConfig, result, reasoning, table: SIDTable, work: Path, source: str,
                             curves: CurveLog):
    """`coldstart.self_traces`: the cold-started model writes its own traces, then learns the SID after them.
    Returns (the SFT result, its metrics prefixed `self_traces_`, its checkpoint store). Its losses join
    `curves` as `self_traces/...`, at steps after the first SFT's."""
    from ..models import load_model
    from ..training.runtime import has_gpu
    from ..training.sft import save_result
    from . import coldstart

    first = save_result(result, work / "teacher_trace_model")  # the second SFT (and its workers) start here
    model, tok = load_model(str(first))
    model = model.to("cuda" if has_gpu() else "cpu").eval()
    recs, closed = coldstart.self_trace_records(model, tok, reasoning, table.sid_by_item, config, source=source)
    del model
    own_work = work / "self_traces"
    store = persistent_store("coldstart_self_traces", own_work / CHECKPOINTS, config.self_traces.train.resume,
                             beside=work)  # the curves file both SFTs write
    own = coldstart.train_on_own_traces(config, str(first), recs, own_work, checkpoint_store=store, callbacks=[
        curve_callback(curves, prefix=SELF_TRACES_CURVE_PREFIX, step_offset=result.global_step)])
    metrics = {f"self_traces_{k}": v for k, v in own.metrics().items()}
    direct = sum(r["task"] == coldstart.DIRECT_TASK for r in recs)
    metrics.update(self_traces_samples=float(len(recs) - direct), self_traces_direct_rows=float(direct),
                   self_traces_closed_share=closed)
    return own, metrics, store


# ---------------------------------------------------------------- GRPO

def grpo_rows(config: GRPOStageConfig, dataset: Artifact, sid_by_item: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(training rows, the fixed validation subset) from the dataset's train / valid splits."""
    train = sid_rows(read_samples(dataset.path, "train"), sid_by_item, config.prompt, config.max_samples, config.seed,
                     source=f"{dataset.uri}/{SAMPLES_FILE} (train)")
    evals: list[dict] = []
    if config.eval_samples:
        valid = read_samples(dataset.path, "valid")
        if valid.empty:
            raise ReasoningDataError(f"{dataset.uri}/{SAMPLES_FILE}: no valid samples for the Recall@10 curve")
        evals = sid_rows(valid, sid_by_item, config.prompt, config.eval_samples, config.seed,
                         source=f"{dataset.uri}/{SAMPLES_FILE} (valid)")
    return train, evals


def _summary(rows: list[dict]) -> dict[str, float]:
    """First/last values of the headline curves (reward at the first and last logged steps)."""
    out: dict[str, float] = {}
    for key in GRPO_CURVE_KEYS:
        values = [r[key] for r in rows if key in r]
        if values:
            name = key.replace("/", "_").replace("@", "_at_")
            out[f"{name}_first"], out[f"{name}_last"] = float(values[0]), float(values[-1])
    return out


def published_policy(rows: list[dict], candidates: dict[int, Path]) -> tuple[int, Path]:
    """`grpo.publish: best_validation`: (step, directory) of the candidate policy (step 0 = the input, the
    kept best, the last step's) with the highest validation Recall@10 in `rows`; ties go to the earlier
    step (fewer updates away from the input). The last step's when none was measured."""
    measured = {int(r["step"]): r[RECALL_KEY] for r in rows if RECALL_KEY in r}
    scored = [s for s in candidates if s in measured]
    if not scored:
        log.warning("grpo.publish best_validation: no Recall@10 measured; publishing the last step's policy")
        last = max(candidates)
        return last, candidates[last]
    step = min(scored, key=lambda s: (-measured[s], s))
    log.info("grpo: publishing the policy of step %d (validation Recall@10 %.4f; %s)", step, measured[step],
             ", ".join(f"step {s}: {measured[s]:.4f}" for s in sorted(scored)))
    return step, candidates[step]


def run_grpo(config: GRPOStageConfig, model_in: Artifact | str, dataset: Artifact, sids: Artifact, out: str,
             work_dir: str | Path | None = None, tracker=None) -> Artifact:
    from ..models import resolve_model_dir
    from . import grpo

    t0 = time.time()
    out = str(out)
    table = read_sid_table(sids.path)
    parents = [model_in, dataset, sids]
    if not config.enabled:
        return _pass_through(config, model_in, table, out, parents, GRPO_CURVES)
    catalogue = table.catalogue
    train_rows, eval_rows = grpo_rows(config, dataset, table.sid_by_item)
    work = Path(work_dir) if work_dir else work_dir_for(out, config.work_dir)
    # a retried pod first gets its checkpoint, curves and kept best back: the recall callback reads its baseline there
    store = persistent_store("grpo", work / CHECKPOINTS, config.resume, beside=work)
    curves = CurveLog(work / CURVES_FILE, forward=_forward(tracker))
    callbacks = [curve_callback(curves)]
    best_dir = work if config.publish == "best_validation" and eval_rows else None  # where the best is kept
    if eval_rows:
        callbacks.append(recall_callback(curves, eval_rows, list(catalogue.item_by_sid), config, best_dir=best_dir))
    ref = _model_ref(config.model, model_in)
    model_dir = resolve_model_dir(ref)
    if launcher.needs_launch(config.cluster.num_gpus, config.cluster.deepspeed):
        # several GPUs / ZeRO: the same training in `accelerate launch` workers
        info = grpo.launch(config, model_dir, train_rows, catalogue, work / CHECKPOINTS, work / "final",
                           curves.path, eval_rows, checkpoint_store=store, best_dir=best_dir)
        if tracker is not None:  # workers wrote the curves; replay them into this step's MLflow run
            for row in curves.rows():
                tracker.log_metrics({mlflow_name(k): v for k, v in row.items() if k != "step"}, step=int(row["step"]))
    else:
        with cpu_threads(config.cpu_threads):
            info = grpo.train(config, model_dir, train_rows, catalogue, work / CHECKPOINTS, work / "final",
                              callbacks, checkpoint_store=store)
    rows = curves.rows()
    step, chosen = int(info["train_steps"]), work / "final"
    if best_dir is not None:
        step, chosen = published_policy(rows, {0: model_dir, **best_saved(best_dir), step: chosen})
    metrics = {**{k: float(v) for k, v in info.items()}, **_summary(rows), "train_prompts": float(len(train_rows)),
               "eval_prompts": float(len(eval_rows)), "published_step": float(step), "wall_s": time.time() - t0}
    art = _publish(out, config, parents=parents, model_ref=ref, model=chosen,
                   sid_tokens=_sid_tokens(model_in, table), metrics=metrics, rows=rows, curves=GRPO_CURVES)
    shutil.rmtree(work, ignore_errors=True)
    step_state.clear(store and store.uri)
    log.info("grpo metrics: %s", json.dumps(metrics, sort_keys=True))
    return art


# ---------------------------------------------------------------- pipeline steps

def _open_model(uri: str) -> Artifact | str:
    """A model artifact when the URI is one, else the URI as a plain model reference."""
    p = Path(uri)
    if uri.startswith("s3://") or (p / MANIFEST).is_file():
        return open_artifact(uri, kind=KIND)
    return uri


def coldstart_step(config_json: str, model_uri: str, dataset_uri: str, sids_uri: str, corpus_uri: str, out: str,
                   tracking_uri: str = "", parent_run_id: str = "", max_steps: int | None = None,
                   **overrides) -> dict:
    """The pipeline step: config from the `coldstart` section (+ typed overrides), tracked in MLflow.
    `max_steps` (a pipeline knob) bounds the SFT; None/0 keeps the config's value."""
    from ..config import section
    from ..tracking import stage_run

    config = ColdStartConfig.build(section(config_json, "coldstart"), source="config_json",
                                   train={"max_steps": max_steps or None}, **overrides)
    model_in = _open_model(model_uri)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND) if dataset_uri else None
    sids = open_artifact(sids_uri, kind=SIDS_KIND)
    corpus = open_artifact(corpus_uri, kind=CORPUS_KIND)
    with stage_run("coldstart", config, tracking_uri, parent_run_id) as tracker:
        if isinstance(model_in, Artifact):
            tracker.log_input(model_in, context="model")
        if dataset is not None:
            tracker.log_input(dataset, context="dataset", table=SAMPLES_FILE)
        tracker.log_input(sids, context="sids")
        tracker.log_input(corpus, context="training", table=USER_REASONING_FILE)
        art = run_coldstart(config, model_in, dataset, sids, corpus, out, tracker=tracker)
        metrics = art.manifest["metrics"]
        tracker.log_metrics({mlflow_name(f"final_{k}"): v for k, v in metrics.items()})
        tracker.log_output(art, files=(METRICS_FILE, CURVES_FILE, CURVES_MD, CURVES_PNG))
    return metrics


def grpo_step(config_json: str, model_uri: str, dataset_uri: str, sids_uri: str, out: str,
              tracking_uri: str = "", parent_run_id: str = "", **overrides) -> dict:
    """The pipeline step: config from the `grpo` section (+ typed overrides), tracked in MLflow."""
    from ..config import section
    from ..tracking import stage_run

    config = GRPOStageConfig.build(section(config_json, "grpo"), source="config_json", **overrides)
    model_in = _open_model(model_uri)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    sids = open_artifact(sids_uri, kind=SIDS_KIND)
    with stage_run("grpo", config, tracking_uri, parent_run_id) as tracker:
        if isinstance(model_in, Artifact):
            tracker.log_input(model_in, context="model")
        tracker.log_input(dataset, context="training", table=SAMPLES_FILE)
        tracker.log_input(sids, context="sids")
        art = run_grpo(config, model_in, dataset, sids, out, tracker=tracker)
        metrics = art.manifest["metrics"]
        tracker.log_metrics({mlflow_name(f"final_{k}"): v for k, v in metrics.items()})
        tracker.log_output(art, files=(METRICS_FILE, CURVES_FILE, CURVES_MD, CURVES_PNG))
    return metrics


__all__ = ["run_coldstart", "run_grpo", "coldstart_step", "grpo_step", "KIND", "MODEL_DIR", "CURVES_MD"]
