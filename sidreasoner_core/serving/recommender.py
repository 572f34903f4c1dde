"""The recommender behind the served model: a bundle directory (HF model, catalogue, serving
config) loaded once, answering "next items for these histories".

Decoding (`decoding/`) and prompts are the ones evaluation uses (constrained beam search over the
catalogue trie, the full ranking of paper §4.1.1; thinking mode reasons first, paper §3.1.2), so
a served answer is what evaluation scored.

Bundle layout:
    model/             the Hugging Face model directory (with its SID tokens)
    catalogue.parquet  item_id, title, sid: every item the model may recommend
    serving.json       the ServingConfig
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .config import ServingConfig

MODEL_DIR, CATALOGUE_FILE, CONFIG_FILE = "model", "catalogue.parquet", "serving.json"
CATALOGUE_SCHEMA = pa.schema([("item_id", pa.string()), ("title", pa.string()), ("sid", pa.string())])
MODES = ("direct", "thinking")


class RequestError(ValueError):
    """A request the recommender cannot answer as asked (the HTTP server maps it to 400)."""


@dataclass
class Answer:
    recommendations: list[dict]   # [{item_id, title, sid, score}], best first
    reasoning: str | None         # thinking mode only


def write_bundle(dest: Path, model_dir: Path, catalogue: list[dict], config: ServingConfig) -> Path:
    """Write a bundle at `dest` (a new directory): copy of the model dir, catalogue, config."""
    import shutil

    dest.mkdir(parents=True)
    shutil.copytree(model_dir, dest / MODEL_DIR)
    pq.write_table(pa.Table.from_pylist(catalogue, schema=CATALOGUE_SCHEMA), dest / CATALOGUE_FILE)
    (dest / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    return dest


class Recommender:
    def __init__(self, model, tokenizer, catalogue: list[dict], config: ServingConfig):
        from ..decoding.constrained import SIDTrie

        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.sid_by_item = {r["item_id"]: r["sid"] for r in catalogue}
        self.title = {r["item_id"]: r["title"] for r in catalogue}
        # Items may share a SID (collisions the SID stage could not split): a SID stands for all of them.
        self.items_of_sid: dict[str, list[str]] = {}
        for item in sorted(self.sid_by_item):
            self.items_of_sid.setdefault(self.sid_by_item[item], []).append(item)
        self.trie = SIDTrie.build(self.items_of_sid, tokenizer)

    @classmethod
    def load(cls, bundle: str | Path) -> "Recommender":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        bundle = Path(bundle)
        config = ServingConfig.build(json.loads((bundle / CONFIG_FILE).read_text()), source=str(bundle / CONFIG_FILE))
        if config.max_threads:
            torch.set_num_threads(config.max_threads)
        tok = AutoTokenizer.from_pretrained(bundle / MODEL_DIR)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(bundle / MODEL_DIR, dtype=getattr(torch, config.dtype)).eval()
        catalogue = pq.read_table(bundle / CATALOGUE_FILE).to_pylist()
        return cls(model, tok, catalogue, config)

    def to(self, device: str) -> "Recommender":
        """The model moved to `device` (the promotion gate ranks on its GPU; serving stays where it loaded)."""
        self.model = self.model.to(device)
        return self

    def __len__(self) -> int:
        return len(self.sid_by_item)

    # -- requests -------------------------------------------------------------------------------

    def check(self, histories: Sequence, k: int | None = None, mode: str | None = None) -> tuple[list[list[str]], int, str]:
        """Validate a request; returns (histories as lists of str, k, mode) or raises RequestError."""
        cfg = self.config
        k = cfg.default_k if k is None else k
        mode = mode or cfg.default_mode
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(cfg.max_k, len(self)):
            raise RequestError(f"k must be an integer from 1 to {min(cfg.max_k, len(self))}, got {k!r}")
        if mode not in MODES:
            raise RequestError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if not len(histories):
            raise RequestError("no histories in the request")
        if len(histories) > cfg.max_batch_rows:
            raise RequestError(f"{len(histories)} histories in one request; at most {cfg.max_batch_rows}")
        out = []
        for row, history in enumerate(histories):
            if history is None or isinstance(history, (str, bytes)) or not hasattr(history, "__len__"):
                raise RequestError(f"row {row}: history must be a list of item ids, got {type(history).__name__}")
            history = list(history)
            if not history:
                raise RequestError(f"row {row}: history is empty; give at least one item id")
            if len(history) > cfg.max_history:
                raise RequestError(f"row {row}: history has {len(history)} items; at most {cfg.max_history}")
            bad_type = next((h for h in history if not isinstance(h, str)), None)
            if bad_type is not None:
                raise RequestError(f"row {row}: item ids are strings, got {bad_type!r}")
            unknown = [h for h in history if h not in self.sid_by_item]
            if unknown:
                raise RequestError(f"row {row}: unknown item id(s) {unknown[:5]} (not in the model's catalogue of "
                                   f"{len(self)} items)")
            out.append(history)
        return out, k, mode

    def rank(self, histories: Sequence[Sequence[str]], num_beams: int, mode: str = "direct",
             progress: bool = False) -> tuple[list[list[tuple[str, float]]], list[str | None]]:
        """Top-`num_beams` catalogue SIDs (with log-probabilities) for known-item histories, and the
        reasoning of each in thinking mode. No validation: `check` first, or pass known items only."""
        from ..decoding.constrained import rank_sids
        from ..decoding.thinking import think_then_rank
        from ..prompts import ranking_prompts

        tok, cfg = self.tokenizer, self.config
        thinking = mode == "thinking"
        prompts = ranking_prompts(tok, [[self.sid_by_item[h] for h in hist] for hist in histories], thinking)
        if thinking:
            pairs = think_then_rank(self.model, tok, prompts, self.trie, num_beams, cfg.reasoning_beams,
                                    cfg.batch_size, cfg.max_reasoning_tokens, cfg.batch_size,
                                    cfg.max_reasoning_sid_tokens, progress, desc="reasoning",
                                    reasoning_samples=cfg.reasoning_samples, temperature=cfg.temperature)
            return [r for _, r in pairs], [t.text for t, _ in pairs]
        ranked = rank_sids(self.model, tok, prompts, self.trie, num_beams, cfg.batch_size,
                           desc="recommend", progress=progress)
        return ranked, [None] * len(prompts)

    def items(self, ranked: list[tuple[str, float]], k: int) -> list[dict]:
        """The first `k` items of a ranked SID list (a shared SID yields each of its items)."""
        out = []
        for sid, score in ranked:
            for item in self.items_of_sid[sid]:
                if len(out) == k:
                    return out
                out.append({"item_id": item, "title": self.title[item] or "", "sid": sid, "score": float(score)})
        return out

    def recommend(self, histories: Sequence, k: int | None = None, mode: str | None = None,
                  progress: bool = False) -> list[Answer]:
        histories, k, mode = self.check(histories, k, mode)
        ranked, reasoning = self.rank(histories, max(k, self.config.num_beams), mode, progress)
        return [Answer(self.items(r, k), why) for r, why in zip(ranked, reasoning)]
