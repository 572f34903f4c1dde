"""Configs of the `evaluate` and `baselines` sections. Defaults are the paper's where it has one."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import StageConfig


class EvaluateConfig(StageConfig):
    split: Literal["valid", "test"] = Field("test", description="split scored")
    num_beams: int = Field(10, ge=1, description="beams of the constrained SID search (paper: 10)")
    ks: list[int] = Field([1, 3, 5, 10], description="cut-offs of Recall/NDCG; max must be <= num_beams")
    batch_size: int = Field(8, ge=1, description="samples per forward (each expands to num_beams rows)")
    max_samples: int = Field(0, ge=0, description="direct mode: score the first N samples of the split (0 = all)")
    direct: bool = Field(True, description="direct mode: prompt -> constrained SID beam search")
    thinking_samples: int = Field(-1, ge=-1, description="thinking mode on the first N samples (-1 = same as direct, 0 = off)")
    max_reasoning_tokens: int = Field(1024, ge=1, description="reasoning is force-closed with </think> at this length (paper: 1024)")
    max_reasoning_sid_tokens: int | None = Field(
        30, ge=0, description="SID tokens allowed inside the reasoning (0 = none, None = unbounded); the default "
                              "lets a trace recite a 10-item history once but never loop on SID tokens")
    thinking_batch_size: int = Field(8, ge=1)
    reasoning_beams: int = Field(
        1, ge=1, description="thinking mode: 1 = greedy reasoning (the paper); B > 1 = the B best traces of a beam "
                             "search, each followed by the SID search, ranked by trace + SID log-probability")
    reasoning_samples: int = Field(
        0, ge=0, description="thinking mode: K > 0 samples K reasoning traces (at `temperature`), each followed by "
                             "the SID search, and ranks the catalogue by the mean of p(SID | trace) over them "
                             "(reasoning as a latent variable); 0 = greedy or beams. Exclusive with reasoning_beams > 1")
    best_of_n: int = Field(0, ge=0, description="sampled reasoning traces per sample for the best-of-N curve (0 = off)")
    best_of_n_samples: int = Field(32, ge=1, description="samples used for best-of-N")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of reasoning traces (best-of-N, reasoning_samples)")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    add_missing_sid_tokens: bool = Field(False, description="add absent SID tokens with random embeddings "
                                         "(smoke tests of an un-aligned model only)")
    max_threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch default)")

    @model_validator(mode="after")
    def _check(self):
        if not self.ks or max(self.ks) > self.num_beams or min(self.ks) < 1:
            raise ValueError(f"ks {self.ks} must be >= 1 and <= num_beams ({self.num_beams})")
        if self.reasoning_samples and self.reasoning_beams > 1:
            raise ValueError("reasoning_samples and reasoning_beams > 1 are exclusive: set one of them")
        return self


class SASRecConfig(StageConfig):
    enabled: bool = True
    max_len: int = Field(10, ge=1, description="history length (the data's 10)")
    hidden: int = Field(64, ge=8)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    loss: Literal["ce", "bce"] = Field("ce", description="full softmax over items, or BCE with one sampled negative")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(6, ge=1, description="epochs without a better valid NDCG@10 before stopping")
    all_positions: bool = Field(True, description="next-item loss at every history position, not only the last")
    seed: int = 0


class BaselinesConfig(StageConfig):
    popularity: bool = Field(True, description="most-popular items by train interactions")
    sasrec: SASRecConfig = Field(default_factory=SASRecConfig)
    ks: list[int] = Field([1, 3, 5, 10])
    top_k: int = Field(10, ge=1, description="length of the stored ranked lists (>= max ks)")
    device: str = "auto"
    max_threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch default; 1 is fastest for "
                             "this small model on a busy CPU)")

    @model_validator(mode="after")
    def _check(self):
        if not self.ks or max(self.ks) > self.top_k:
            raise ValueError(f"ks {self.ks} must be <= top_k ({self.top_k})")
        return self


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
