"""The curves file of a training stage: every logged value by step, as JSON lines that survive a kill.

Written by the reasoning stages (`reasoning.callbacks`), read back by them and by the evaluation
report, so it lives in the shared core.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

CURVES_FILE = "curves.jsonl"
RECALL_KEY = "eval/recall@10"  # validation Recall@10 in thinking mode (GRPO's recall callback)


class CurveLog:
    """Append-only JSON-lines record of logged values; `rows()` keeps the last record per (step, key)."""

    def __init__(self, path: str | Path, forward: Callable[[dict, int], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.forward = forward

    def write(self, step: int, values: dict) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not clean:
            return
        line = json.dumps({"step": int(step), **clean}) + "\n"
        if self._ends_mid_line():  # a kill cut the last record: start a fresh line
            line = "\n" + line
        with open(self.path, "a") as f:
            f.write(line)
        if self.forward is not None:
            try:
                self.forward(clean, int(step))
            except Exception as exc:  # tracking must never stop training
                log.warning("curve forward failed: %s", exc)

    def _ends_mid_line(self) -> bool:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(-1, 2)
            return f.read(1) != b"\n"

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        merged: dict[int, dict] = {}
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            merged.setdefault(rec["step"], {}).update(rec)
        return [merged[s] for s in sorted(merged)]
