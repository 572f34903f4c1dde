"""Config of the `serving` section: how the packaged model answers requests."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import StageConfig


class ServingConfig(StageConfig):
    num_beams: int = Field(10, ge=1, description="beams of the constrained SID search (paper: 10); "
                           "a request for more than this many items uses k beams")
    default_k: int = Field(10, ge=1, description="items returned when a request gives no k")
    max_k: int = Field(50, ge=1, description="largest k a request may ask for")
    max_history: int = Field(50, ge=1, description="longest history (item ids) a request may send")
    max_batch_rows: int = Field(256, ge=1, description="most histories in one request")
    batch_size: int = Field(32, ge=1, description="histories per forward pass (32 measured ~10% more recs/s than 16 in bench/serve.py)")
    max_reasoning_tokens: int = Field(256, ge=1, description="thinking mode: reasoning is force-closed here")
    max_reasoning_sid_tokens: int | None = Field(30, ge=0, description="thinking mode: SID tokens allowed inside "
                                                 "the reasoning (as evaluation's; None = unbounded)")
    reasoning_beams: int = Field(1, ge=1, description="thinking mode: reasoning beams (as evaluation's; 1 = greedy)")
    reasoning_samples: int = Field(0, ge=0, description="thinking mode: sampled reasoning traces whose p(SID | trace) "
                                   "are averaged (as evaluation's; 0 = greedy or beams)")
    temperature: float = Field(1.0, gt=0, description="thinking mode: sampling temperature of reasoning_samples")
    default_mode: Literal["direct", "thinking"] = "direct"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_threads: int = Field(0, ge=0, description="torch CPU threads when loaded (0 = torch default)")

    @model_validator(mode="after")
    def _check(self):
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} must be <= max_k ({self.max_k})")
        if self.reasoning_samples and self.reasoning_beams > 1:
            raise ValueError("reasoning_samples and reasoning_beams > 1 are exclusive: set one of them")
        return self
