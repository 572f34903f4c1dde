"""Enrichment stage entry points: `run(config, dataset, sids, out)` and the pipeline `step`."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd

from .. import corpus, step_state
from ..artifacts import Artifact, ArtifactError, open_artifact, write_artifact
from ..storage import is_s3
from . import inputs, prompts
from .cache import ResponseCache, StoreSync
from .client import Usage
from .config import EnrichConfig
from .jobs import Job, analysis_json, item_job, user_job
from .leakage import identifying_share

log = logging.getLogger(__name__)


def default_cache_dir(out: str | Path) -> Path:
    """Beside a local output (survives a killed run, found again by the rerun); for s3:// outputs
    a local directory keyed by the URI."""
    out = str(out)
    if is_s3(out):
        root = Path(os.environ.get("SIDREASONER_CACHE", Path.home() / ".cache" / "sidreasoner"))
        return root / "enrich" / hashlib.sha256(out.encode()).hexdigest()[:16]
    p = Path(out)
    return p.parent / f".{p.name}.enrich-cache"


def _previous_cache(out: str | Path) -> tuple[Path, ...]:
    """The cache/ of a finished corpus artifact already at `out` (local or s3://): a rerun with more
    items or samples pays only for what is new."""
    try:
        prev = open_artifact(out, kind=corpus.KIND)
    except ArtifactError:
        return ()
    return (prev.path / corpus.CACHE_DIR,)


@contextlib.contextmanager
def _exit_on_sigterm():
    """A SIGTERM (pod eviction, preemption, KFP cancel) unwinds like an exception, so the cache's
    final flush to the step state runs before the process ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_jobs(config: EnrichConfig, items: dict, samples: pd.DataFrame) -> tuple[list[Job], list[Job], pd.DataFrame]:
    item_jobs: list[Job] = []
    if config.item_centric:
        chosen = list(items.values())[: config.max_items] if config.max_items else list(items.values())
        item_jobs = [item_job(i, config) for i in chosen]
    users = inputs.with_sample_ids(samples)
    users = users[users["split"].isin(config.user_splits)] if config.user_centric else users.iloc[:0]
    if config.max_user_samples is not None and len(users) > config.max_user_samples:
        users = users.sample(n=config.max_user_samples, random_state=config.seed).sort_index()
    users = users.reset_index(drop=True)
    user_jobs = [user_job(r.sample_id, [items[h] for h in r.history], items[r.target], config)
                 for r in users.itertuples(index=False)]
    return item_jobs, user_jobs, users


def _item_table(jobs: list[Job], items: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "item_id": j.id, "sid": items[j.id].sid, "analysis": analysis_json(j),
        "paragraph": j.values.get("integration") if j.status == "ok" else None,
        "status": j.status, "attempts": j.attempts, "error": j.error} for j in jobs],
        columns=corpus.ITEM_TEXTS_SCHEMA.names)


def _user_table(jobs: list[Job], users: pd.DataFrame, items: dict) -> pd.DataFrame:
    rows = []
    for j, r in zip(jobs, users.itertuples(index=False)):
        ok = j.status == "ok"
        rows.append({"sample_id": r.sample_id, "split": r.split, "user_id": str(r.user_id), "position": r.position,
                     "history": list(r.history), "history_sids": [items[h].sid for h in r.history],
                     "target": r.target, "target_sid": items[r.target].sid,
                     "reasoning": j.values.get("reasoning"), "narrative": j.values.get("narrative") if ok else None,
                     "status": j.status, "attempts": j.attempts, "error": j.error})
    return pd.DataFrame(rows, columns=corpus.USER_REASONING_SCHEMA.names)


def run(config: EnrichConfig, dataset: Artifact | str | Path, sids: Artifact | str | Path, out: str | Path) -> Artifact:
    t0 = time.time()
    dataset = dataset if isinstance(dataset, Artifact) else open_artifact(dataset, kind="dataset")
    sids = sids if isinstance(sids, Artifact) else open_artifact(sids, kind="sids")
    items, samples = inputs.load(dataset.path, sids.path)
    item_jobs, user_jobs, users = build_jobs(config, items, samples)
    jobs = [*item_jobs, *user_jobs]
    log.info("enrich: %d item record(s), %d user record(s), teacher=%s backend=%s",
             len(item_jobs), len(user_jobs), config.teacher, config.backend)

    usage = Usage(model=config.model if config.teacher == "openai" else "offline")
    cache = None
    if config.teacher == "offline":
        from .runner import run_offline

        run_offline(jobs, config)
    else:
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir(out)
        state_uri = step_state.step_state_uri("enrich", "cache")
        sync = StoreSync(state_uri, config.state_flush_answers, config.state_flush_s) if state_uri else None
        cache = ResponseCache(cache_dir, seed_dirs=_previous_cache(out), sync=sync)
        log.info("enrich: response cache %s (%d cached answer(s))%s", cache_dir, len(cache),
                 f", saved to {state_uri}" if state_uri else "")
        try:
            with _exit_on_sigterm():
                if config.backend == "ray":
                    from .ray_path import run_ray

                    run_ray(jobs, config, cache, usage)
                else:
                    from .runner import run_teacher

                    run_teacher(jobs, config, cache, usage)
        finally:
            cache.close()

    stats = {
        "teacher": config.teacher, "backend": config.backend, "prompt_version": prompts.PROMPT_VERSION,
        "items_total": len(item_jobs), "items_ok": sum(j.status == "ok" for j in item_jobs),
        "users_total": len(user_jobs), "users_ok": sum(j.status == "ok" for j in user_jobs),
    }
    stats["items_failed"] = stats["items_total"] - stats["items_ok"]
    stats["users_failed"] = stats["users_total"] - stats["users_ok"]
    leak = identifying_share(((j.values["reasoning"], j.target) for j in user_jobs if j.status == "ok"),
                             items.values())
    stats["reasoning_states_target_type"] = round(leak["states_target_type"], 4)
    stats["reasoning_identifying"] = round(leak["identifying"], 4)
    lost = [j.id for j in jobs if j.status not in ("ok", "failed")]
    if lost:  # a runner bug, never a silent drop
        raise RuntimeError(f"enrich: {len(lost)} record(s) unfinished (first {lost[0]!r})")
    usage_doc = {**usage.to_dict(config.prices), **stats, "wall_s": round(time.time() - t0, 3)}
    with write_artifact(out, kind=corpus.KIND, config=config, parents=[dataset, sids], extra={"stats": stats}) as d:
        corpus.write(_item_table(item_jobs, items), corpus.ITEM_TEXTS_SCHEMA, d / corpus.ITEM_TEXTS_FILE)
        corpus.write(_user_table(user_jobs, users, items), corpus.USER_REASONING_SCHEMA, d / corpus.USER_REASONING_FILE)
        with open(d / corpus.FAILED_FILE, "w", encoding="utf-8") as f:
            for j in jobs:
                if j.status == "failed":
                    f.write(json.dumps(j.report(), ensure_ascii=False) + "\n")
        (d / corpus.USAGE_FILE).write_text(json.dumps(usage_doc, indent=2))
        (d / corpus.PROMPTS_FILE).write_text(json.dumps({"version": prompts.PROMPT_VERSION,
                                                         "templates": prompts.TEMPLATES}, indent=2))
        if cache is not None:
            cache.export(d / corpus.CACHE_DIR)
    if cache is not None and not config.cache_dir:
        cache.remove()  # its content now lives in the artifact's cache/, which a rerun seeds from
    if cache is not None and cache.sync is not None:
        step_state.clear(cache.sync.uri)  # published: a succeeded step is not retried
    log.info("enrich: %s", json.dumps(usage_doc))
    return open_artifact(out, kind=corpus.KIND)


def metrics_of(art: Artifact) -> dict:
    usage = json.loads((art.path / corpus.USAGE_FILE).read_text())
    keys = ("items_total", "items_ok", "items_failed", "users_total", "users_ok", "users_failed", "requests",
            "responses", "cache_hits", "failed_requests", "prompt_tokens", "completion_tokens", "cost_usd", "wall_s",
            "reasoning_states_target_type", "reasoning_identifying")
    return {k: usage[k] for k in keys}


def step(config_json: str, dataset_uri: str, sids_uri: str, out: str, tracking_uri: str = "",
         parent_run_id: str = "", **overrides) -> dict:
    """The pipeline step: config from the pipeline config's `enrich` section, tracked in MLflow."""
    from ..config import section
    from ..tracking import stage_run

    config = EnrichConfig.build(section(config_json, "enrich"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind="dataset")
    sids = open_artifact(sids_uri, kind="sids")
    with stage_run("enrich", config, tracking_uri, parent_run_id) as tracker:
        tracker.log_input(dataset, context="dataset", table="items.parquet")
        tracker.log_input(sids, context="sids", table="sids.parquet")
        art = run(config, dataset, sids, out)
        metrics = metrics_of(art)
        tracker.log_metrics(metrics)
        tracker.log_output(art, files=(corpus.USAGE_FILE, corpus.FAILED_FILE, corpus.PROMPTS_FILE))
    return metrics
