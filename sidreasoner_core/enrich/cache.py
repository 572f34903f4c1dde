"""Content-addressed response cache: sha256(model + messages + sampling params) -> response.

Append-only JSON lines, one line per answered request, written (and flushed) the moment a
response arrives, so a run killed at any point keeps everything it has paid for; a torn
last line from a kill is skipped on load. The directory lives beside the output while the
stage runs (resumable) and is copied into the artifact's `cache/` at the end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_FILE = "responses.jsonl"


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Records are {"key", "content", "finish_reason", "usage": {prompt_tokens, completion_tokens}}."""

    def __init__(self, directory: str | os.PathLike, seed_dirs: tuple[str | os.PathLike, ...] = ()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CACHE_FILE
        self.entries: dict[str, dict] = {}
        for d in (*seed_dirs, self.dir):  # e.g. the cache/ of a previous artifact at the same output
            self._load(Path(d) / CACHE_FILE)
        self._fh = None

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        torn = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    self.entries[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn += 1
        if torn:
            log.warning("%s: skipped %d torn/unreadable cache line(s)", path, torn)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, content: str, finish_reason: str | None, usage: dict) -> None:
        rec = {"key": key, "content": content, "finish_reason": finish_reason, "usage": usage}
        self.entries[key] = rec
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._fh.tell() and not self._ends_with_newline():
                self._fh.write("\n")  # a torn line from a killed run: start clean
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def export(self, dest: Path) -> int:
        """Write every entry (seeded + new), deduplicated, to `dest/responses.jsonl`."""
        self.close()
        dest.mkdir(parents=True, exist_ok=True)
        with open(dest / CACHE_FILE, "w", encoding="utf-8") as f:
            for rec in self.entries.values():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return len(self.entries)

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
