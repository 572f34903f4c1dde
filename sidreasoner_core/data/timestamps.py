"""Review timestamps: the unit of each file detected, plausible dates checked, a date window applied.

Amazon 2018 files hold seconds, the 2023 release milliseconds; copies in the wild mix them up,
and read in the wrong unit the dates land in 1970 or tens of thousands of years ahead, which
silently ruins the temporal 8:1:1 split (paper §4.1.1). Each file's values are
classified: seconds and milliseconds of dates in the plausible range are disjoint intervals,
so one pass tells the unit. A file that mixes units, or holds no plausible date, is an error
saying what was found; single implausible values are bad lines (error, or quarantine with
`skip_bad_lines`). The interpretation is recorded in the dataset's stats.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np

from .errors import BadLines, DataError

log = logging.getLogger(__name__)

EARLIEST = int(dt.datetime(1994, 1, 1, tzinfo=dt.timezone.utc).timestamp())  # before the first Amazon review
UNITS = {1: "seconds", 1000: "milliseconds"}


def latest() -> int:
    """The latest plausible review time: now, plus a day of clock skew."""
    return int(time.time()) + 86400


def day(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "beyond year 9999" if seconds > 0 else "before year 1"


@dataclass
class Units:
    """What one file's timestamps turned out to be."""

    per_second: int     # 1 (seconds) or 1000 (milliseconds)
    expected: int       # the format's documented unit
    keep: np.ndarray    # rows with a plausible timestamp

    def stats(self) -> dict:
        return {"unit": UNITS[self.per_second], "format_unit": UNITS[self.expected]}


def detect_units(ts: np.ndarray, expected: int, file, field: str, line_of, bad: BadLines) -> Units:
    """Classify `ts` (one file's raw values); `line_of(row)` gives a row's line for messages."""
    lo, hi = EARLIEST, latest()
    as_s = (ts >= lo) & (ts <= hi)
    as_ms = (ts >= lo * 1000) & (ts <= hi * 1000)
    n_s, n_ms = int(as_s.sum()), int(as_ms.sum())
    rng = f"{day(lo)}..{day(hi)}"
    if n_s and n_ms:
        r_s, r_ms = int(np.flatnonzero(as_s)[0]), int(np.flatnonzero(as_ms)[0])
        raise DataError(
            f"{file}: field '{field}' mixes units: {n_s} value(s) read as seconds (first at line {line_of(r_s)}: "
            f"{int(ts[r_s])} = {day(ts[r_s])}) and {n_ms} as milliseconds (first at line {line_of(r_ms)}: "
            f"{int(ts[r_ms])} = {day(ts[r_ms] // 1000)}); convert the file to one unit")
    if not n_s and not n_ms:
        v = int(ts[0]) if len(ts) else 0
        raise DataError(
            f"{file}:{line_of(0) if len(ts) else 1}: field '{field}': no timestamp in the plausible range {rng} "
            f"in seconds or milliseconds (first value {v}: {day(v)} as seconds, {day(v // 1000)} as milliseconds)")
    per_second = 1000 if n_ms else 1
    keep = as_ms if n_ms else as_s
    for row in np.flatnonzero(~keep):
        v = int(ts[row])
        bad.bad(file, line_of(int(row)), "bad_timestamp",
                f"field '{field}': {v} is {day(v // per_second)} in {UNITS[per_second]} (the rest of the file's "
                f"unit), outside the plausible range {rng}")
    if per_second != expected:
        log.warning("%s: timestamps are in %s, where this format documents %s; reading them as %s",
                    file, UNITS[per_second], UNITS[expected], UNITS[per_second])
    return Units(per_second, expected, keep)


def window_mask(ts_seconds: np.ndarray, window: tuple[dt.date, dt.date] | None) -> np.ndarray:
    """Rows whose day (UTC) lies in the inclusive window; all rows when there is none."""
    if window is None:
        return np.ones(len(ts_seconds), dtype=bool)
    start = int(dt.datetime.combine(window[0], dt.time(), dt.timezone.utc).timestamp())
    end = int(dt.datetime.combine(window[1] + dt.timedelta(days=1), dt.time(), dt.timezone.utc).timestamp())
    return (ts_seconds >= start) & (ts_seconds < end)
