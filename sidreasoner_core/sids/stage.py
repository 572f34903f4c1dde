"""SID stage entry points: `run(config, dataset, out)` and the pipeline `step(...)`.

Artifact (kind "sids"):
  sids.parquet     item_id, sid ("<a_12><b_34><c_5>"), codes (list<int32>), in items.parquet order
  embeddings.npy   float32 N x d, rows in items.parquet order     (not in from_index mode)
  rqvae.pt         RQ-VAE weights + shape (torch.load(weights_only=True))   (not in from_index mode)
  history.json     per-epoch training losses                        (not in from_index mode)
  metrics.json     reconstruction/quantisation loss, collisions before/after, code usage, perplexity
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..artifacts import Artifact, open_artifact, write_artifact
from ..sid import KIND, SIDS_FILE, Catalogue, SIDError, format_sid, parse_sid
from ..training.runtime import cpu_threads
from .collisions import check_code_space, check_distinct, collision_stats, resolve
from .config import SidsConfig
from .errors import SidsError

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
RQVAE_FILE = "rqvae.pt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"

SIDS_SCHEMA = pa.schema([("item_id", pa.string()), ("sid", pa.string()), ("codes", pa.list_(pa.int32()))])


# ---- pieces ----

def level_stats(codes: np.ndarray, codes_per_level: int, levels: int) -> dict[str, float]:
    """Per level: share of codes used and perplexity (exp entropy) of the code distribution."""
    out: dict[str, float] = {}
    for level in range(levels):
        col = codes[:, level]
        col = col[col >= 0]
        counts = np.bincount(col, minlength=codes_per_level).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        out[f"code_usage_l{level}"] = float((counts > 0).sum() / codes_per_level)
        out[f"perplexity_l{level}"] = float(np.exp(-(p * np.log(p)).sum()))
    return out


def sid_table(item_ids: list[str], codes: np.ndarray) -> pd.DataFrame:
    rows = [row[row >= 0].tolist() for row in codes]
    return pd.DataFrame({"item_id": item_ids, "sid": [format_sid(r) for r in rows], "codes": rows})


def codes_from_index(items: pd.DataFrame, codes_per_level: int) -> np.ndarray:
    """Reference SIDs (reference_sid column) as an N x L code array; errors name the item."""
    codes = []
    for item, sid in zip(items["item_id"], items["reference_sid"]):
        if sid is None or (isinstance(sid, float) and sid != sid) or not str(sid).strip():
            raise SidsError(f"items.parquet: item {item!r} has no reference_sid (from_index needs the dataset's "
                            "index.json for every item)")
        try:
            codes.append(parse_sid(str(sid), codes_per_level=codes_per_level))
        except SIDError as exc:
            raise SidsError(f"items.parquet: item {item!r}: bad reference_sid: {exc}") from None
    lengths = {len(c) for c in codes}
    if len(lengths) > 1:
        raise SidsError(f"items.parquet: reference SIDs have mixed lengths {sorted(lengths)}")
    return np.asarray(codes, dtype=np.int64)


def _reference_stats(items: pd.DataFrame) -> dict[str, int]:
    ref = items["reference_sid"].dropna()
    if ref.empty:
        return {}
    counts = ref.value_counts()
    return {"reference_items": int(len(ref)), "reference_shared_sids": int((counts > 1).sum()),
            "reference_colliding_items": int(counts[counts > 1].sum())}


def _finish(codes: np.ndarray, config: SidsConfig, k: int, cost_fn, own_cost) -> tuple[np.ndarray, dict]:
    """Apply the collision policy; return final codes and the before/after statistics."""
    before = collision_stats(codes)
    stats = {f"{key}_before": v for key, v in before.items()}
    if before["shared_sids"] and config.collisions == "error":
        raise SidsError(f"{before['shared_sids']} SIDs are shared by {before['colliding_items']} items "
                        "(collisions=error); use collisions=resolve")
    if config.collisions == "resolve":
        t0 = time.perf_counter()
        codes, res = resolve(codes, k, cost_fn, own_cost, chunk=config.assign_chunk)
        stats.update(res, resolve_seconds=time.perf_counter() - t0)
    elif before["shared_sids"]:
        log.warning("keeping %d shared SIDs (collisions=keep): those items are indistinguishable",
                    before["shared_sids"])
    after = collision_stats(codes)
    stats.update({f"{key}_after": v for key, v in after.items()})
    return codes, stats


def run(config: SidsConfig, dataset: Artifact | str | Path, out: str | Path, progress: bool = True) -> Artifact:
    """Items of a dataset artifact -> a sids artifact (see module docstring)."""
    from ..dataset import read_items

    art = dataset if isinstance(dataset, Artifact) else open_artifact(dataset, kind="dataset")
    items = read_items(art.path)
    if items.empty:
        raise SidsError(f"{art.uri}/items.parquet: no items")
    dup = items["item_id"][items["item_id"].duplicated()]
    if len(dup):
        raise SidsError(f"{art.uri}/items.parquet: item id {dup.iloc[0]!r} appears more than once")
    ids = items["item_id"].astype(str).tolist()
    k = config.codes_per_level
    metrics: dict = {"items": len(ids), **_reference_stats(items)}
    files: dict[str, object] = {}

    if config.from_index:
        codes = codes_from_index(items, k)
        check_code_space(len(ids), codes.shape[1], k)
        # codes carry no geometry here: a displaced item takes the free code numerically nearest its own
        own = codes[:, -1].astype(np.float32)
        cost_fn = lambda rows: np.abs(np.arange(k, dtype=np.float32)[None, :] - own[rows, None])  # noqa: E731
        levels = codes.shape[1]
        final, stats = _finish(codes, config, k, cost_fn, None)
    else:
        import torch

        from .embed import embed_items
        from .rqvae import RQVAEShape, sq_dists, train_rqvae

        check_code_space(len(ids), config.levels, k)
        t0 = time.perf_counter()
        with cpu_threads(config.encoder_threads):
            emb = embed_items(config, items, progress=progress)
        metrics.update(embedding_dim=int(emb.shape[1]), embed_seconds=time.perf_counter() - t0)
        with cpu_threads(config.num_threads):  # the RQ-VAE on one thread: seeded SIDs equal across machines
            shape = RQVAEShape(input_dim=int(emb.shape[1]), hidden_dims=list(config.hidden_dims),
                               latent_dim=config.latent_dim, levels=config.levels, codes_per_level=k,
                               beta=config.beta, dropout=config.dropout)
            t0 = time.perf_counter()
            model, history = train_rqvae(emb, shape, config.epochs, config.batch_size, config.lr, config.weight_decay,
                                         config.kmeans_iters, config.seed, config.device, progress,
                                         config.reset_dead_codes)
            metrics["train_seconds"] = time.perf_counter() - t0
            metrics.update(model.losses(emb, config.assign_chunk))
            codes, last_r, last_d = model.assign(emb, config.assign_chunk)
            book = model.codebooks.detach()[-1]
            cost_fn = lambda rows: sq_dists(torch.from_numpy(last_r[rows]), book).numpy()  # noqa: E731
            levels = config.levels
            final, stats = _finish(codes, config, k, cost_fn, last_d)
        files.update(embeddings=emb, model=model, history=history)

    metrics.update(stats)
    metrics.update(level_stats(final, k, levels))
    table = sid_table(ids, final)
    if config.collisions != "keep":
        check_distinct(final)
        Catalogue(zip(table["item_id"], table["sid"]))  # the invariant downstream relies on
    metrics["unique_sids"] = int(table["sid"].nunique())

    with write_artifact(out, kind=KIND, config=config, parents=[art], extra={"metrics": metrics}) as d:
        pq.write_table(pa.Table.from_pandas(table, schema=SIDS_SCHEMA, preserve_index=False), d / SIDS_FILE)
        if "embeddings" in files:
            np.save(d / EMBEDDINGS_FILE, files["embeddings"])
            files["model"].save(d / RQVAE_FILE, extra={"config": config.model_dump(mode="json")})
            (d / HISTORY_FILE).write_text(json.dumps(files["history"]))
        (d / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("sids stage: %s", json.dumps(metrics))
    return open_artifact(out, kind=KIND)


def step(config_json: str, dataset_uri: str, out: str, tracking_uri: str = "", parent_run_id: str = "",
         **overrides) -> dict:
    """The pipeline step: config from the pipeline config's `sids` section, tracked in MLflow."""
    from ..config import section
    from ..tracking import stage_run

    config = SidsConfig.build(section(config_json, "sids"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind="dataset")
    with stage_run("sids", config, tracking_uri, parent_run_id) as tracker:
        tracker.log_input(dataset, context="items", table="items.parquet")
        art = run(config, dataset, out)
        metrics = {k: v for k, v in art.manifest["metrics"].items() if isinstance(v, (int, float))}
        tracker.log_metrics(metrics)
        if tracker.active and (art.path / HISTORY_FILE).exists():  # the training curve, at most ~50 points
            history = json.loads((art.path / HISTORY_FILE).read_text())
            every = max(1, len(history) // 50)
            for row in history[::every] + history[-1:]:
                tracker.log_metrics({f"train_{k}": v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        tracker.log_output(art, files=(METRICS_FILE, HISTORY_FILE))
    return metrics
