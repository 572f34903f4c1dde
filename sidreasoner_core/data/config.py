from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from ..config import StageConfig


class DataConfig(StageConfig):
    """Data stage settings (paper §4.1.1)."""

    format: Literal["auto", "csv", "amazon2018", "amazon2023"] = Field(
        "auto", description="input format; auto detects it from the files present")
    category: str | None = Field(None, description="category name; default: the input directory's name")
    k_core: int = Field(5, ge=1, description="iterative k-core on users and items (raw inputs)")
    max_history: int = Field(10, ge=1, description="sliding window: at most this many previous items")
    split_ratio: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/valid/test by target time")
    min_title_chars: int = Field(2, ge=1, description="items with a shorter (stripped) title are dropped")
    skip_bad_lines: bool = Field(False, description="skip malformed lines (bad JSON/CSV, invalid UTF-8, implausible "
                                 "timestamps) into quarantine.jsonl, counted by reason, instead of failing")
    date_window: tuple[dt.date, dt.date] | None = Field(
        None, description="keep reviews whose day (UTC) lies in [first, last], e.g. [2016-10-01, 2018-11-30] "
                          "for the paper's 2018 files (raw inputs; recorded in the stats)")

    @field_validator("split_ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or sum(v) <= 0 or v[0] <= 0:
            raise ValueError("split_ratio needs non-negative parts with a positive train share, e.g. [0.8, 0.1, 0.1]")
        return v

    @field_validator("date_window")
    @classmethod
    def _window(cls, v):
        if v is not None and v[0] > v[1]:
            raise ValueError(f"date_window starts ({v[0]}) after it ends ({v[1]})")
        return v
