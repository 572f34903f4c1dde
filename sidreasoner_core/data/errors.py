"""Bad-input bookkeeping shared by the readers: fail loudly, or quarantine and count."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Bad input; the message names the file, line/row and field."""


@dataclass
class BadLines:
    """Collects skipped records when `skip_bad_lines` is on; raises otherwise."""

    skip: bool
    counts: Counter = field(default_factory=Counter)
    records: list[dict] = field(default_factory=list)

    def bad(self, file: str | Path, line: int, reason: str, detail: str, raw: str = "") -> None:
        if not self.skip:
            raise DataError(f"{file}:{line}: {detail}")
        self.counts[reason] += 1
        self.records.append({"file": str(file), "line": line, "reason": reason, "detail": detail, "raw": raw[:2000]})

    def write_quarantine(self, path: Path) -> None:
        if self.records:
            with open(path, "w") as f:
                for rec in self.records:
                    f.write(json.dumps(rec) + "\n")
