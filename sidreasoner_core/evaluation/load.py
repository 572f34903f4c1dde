"""Evaluation step 1, load: the split's samples with their SID histories, the catalogue, the model
and the compiled catalogue trie."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..artifacts import Artifact, ArtifactError, open_artifact
from ..dataset import SAMPLES_FILE, item_titles, read_items, read_samples
from ..sid import SIDTable, read_sid_table
from .config import EvaluateConfig, resolve_device
from .errors import EvaluationError

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """The split being scored, as SIDs."""

    samples: pd.DataFrame
    table: SIDTable
    history_sids: list[list[str]]
    target_sids: list[str]
    titles: dict[str, str]      # item id -> title, for the report's examples


@dataclass
class EvalModel:
    model: Any
    tokenizer: Any
    path: Path
    trie: Any   # decoding.constrained.SIDTrie over the catalogue's SIDs
    ref: dict   # how an output names the model as its parent (artifacts.Artifact.ref for an artifact)


def sid_table(dataset: Artifact, sids: Artifact | None, items: pd.DataFrame | None = None) -> SIDTable:
    """The sids artifact's table, or the dataset's reference SIDs (`items`: its items table, if read)."""
    if sids is not None:
        return read_sid_table(sids.path)
    items = read_items(dataset.path) if items is None else items
    items = items[items["reference_sid"].notna()]
    source = f"{dataset.uri}/items.parquet (reference_sid)"
    if items.empty:
        raise EvaluationError(f"{source}: no SID artifact given and the dataset has no reference SIDs")
    return SIDTable.from_pairs(zip(items["item_id"].astype(str), items["reference_sid"]), source=source)


def history_sids(df: pd.DataFrame, sid_by_item: dict[str, str], source: str) -> list[list[str]]:
    """Each sample's history as SIDs; a history or target item without a SID is an error naming it."""
    out = []
    for i, (hist, target) in enumerate(zip(df["history"], df["target"])):
        missing = next((h for h in list(hist) + [target] if h not in sid_by_item), None)
        if missing is not None:
            raise EvaluationError(f"{source}: sample {i} (user {df['user_id'].iloc[i]!r}): item {missing!r} has no SID")
        out.append([sid_by_item[h] for h in hist])
    return out


def load_data(config: EvaluateConfig, dataset: Artifact, sids: Artifact | None) -> EvalData:
    items = read_items(dataset.path)
    table = sid_table(dataset, sids, items)
    samples = read_samples(dataset.path, config.split)
    if samples.empty:
        raise EvaluationError(f"{dataset.uri}: split {config.split!r} has no samples")
    hist = history_sids(samples, table.sid_by_item, f"{dataset.uri}/{SAMPLES_FILE}[{config.split}]")
    return EvalData(samples, table, hist, [table.sid_by_item[t] for t in samples["target"]], item_titles(items))


def resolve_model(model_uri: str) -> tuple[Path, dict]:
    """A "model" artifact (HF directory under model/) or any reference `models.resolve_model_dir` takes,
    and how an output names it as its parent: the verified artifact's ref (with its digest, so a later
    step can tell it scored the same weights), else the bare reference."""
    from ..models import resolve_model_dir

    try:
        art = open_artifact(model_uri)
    except ArtifactError:
        return resolve_model_dir(model_uri), {"uri": str(model_uri), "kind": "model"}
    if (art.path / "model" / "config.json").exists():
        return art.path / "model", art.ref()
    return resolve_model_dir(str(art.path)), art.ref()


def load_eval_model(model_uri: str, config: EvaluateConfig):
    """(model in eval mode on the configured device, tokenizer with a pad token, model directory, its parent ref)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, ref = resolve_model(model_uri)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, config.dtype))
    return model.to(resolve_device(config.device)).eval(), tok, path, ref


def load_model(config: EvaluateConfig, model_uri: str, table: SIDTable) -> EvalModel:
    """The model, its tokenizer and the catalogue trie compiled for that tokenizer."""
    from ..decoding.constrained import SIDTrie
    from ..models import add_sid_tokens

    model, tok, path, ref = load_eval_model(model_uri, config)
    if config.add_missing_sid_tokens and add_sid_tokens(tok, model, table.vocabulary()):
        log.warning("evaluate: SID tokens added with random embeddings (add_missing_sid_tokens)")
    return EvalModel(model, tok, path, SIDTrie.build(table.item_by_sid, tok), ref)
