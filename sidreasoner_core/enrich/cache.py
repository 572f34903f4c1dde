"""Content-addressed response cache: sha256(model + messages + sampling params) -> response.

Append-only JSON lines, one line per answered request, written (and flushed) the moment a
response arrives, so a run killed at any point keeps everything it has paid for; a torn
last line from a kill is skipped on load. The directory lives beside the output while the
stage runs (resumable) and is copied into the artifact's `cache/` at the end.

On a cluster the pod's scratch dies with the pod, so `StoreSync` also copies new lines to the
step's persistent state (`step_state`) as immutable shards, every `flush_every` answers or
`flush_s` seconds and at the end (and on SIGTERM, see `stage`); a retried pod of the same run
seeds its cache from those shards. A kill -9 loses at most the answers since the last flush.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from .. import storage

log = logging.getLogger(__name__)

CACHE_FILE = "responses.jsonl"


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Records are {"key", "content", "finish_reason", "usage": {prompt_tokens, completion_tokens}}."""

    def __init__(self, directory: str | os.PathLike, seed_dirs: tuple[str | os.PathLike, ...] = (),
                 sync: "StoreSync | None" = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CACHE_FILE
        self.entries: dict[str, dict] = {}
        for d in (*seed_dirs, self.dir):  # e.g. the cache/ of a previous artifact at the same output
            self._load(Path(d) / CACHE_FILE)
        self.sync = sync
        if sync is not None:  # what an earlier attempt of this run paid for
            for rec in sync.load():
                self.entries.setdefault(rec["key"], rec)
            sync.start()
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
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        self._fh.write(line)
        self._fh.flush()
        if self.sync is not None:
            self.sync.add(line)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.sync is not None:
            self.sync.close()

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


SHARD_PREFIX = "shard-"


class StoreSync:
    """Copies cache lines to `<uri>/shard-<attempt>-<n>.jsonl` objects from a background thread.

    A shard is written whole (an S3 PUT, or a rename on a volume), so a kill never leaves half of
    one; shards are never rewritten, so attempts cannot clobber each other. `load` merges what is
    there into one shard first, so a long run's many small shards cost one read on the next retry.
    """

    def __init__(self, uri: str, flush_every: int = 20, flush_s: float = 10.0):
        self.uri = uri.rstrip("/")
        self.flush_every, self.flush_s = flush_every, flush_s
        self.attempt = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        self._pending: list[str] = []
        self._seq = 0
        self._lock = threading.Lock()      # guards _pending
        self._put_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed = 0

    def load(self) -> list[dict]:
        names = sorted(k for k in storage.list_keys(self.uri) if k.startswith(SHARD_PREFIX) and k.endswith(".jsonl"))
        records: dict[str, dict] = {}
        for name in names:
            for line in storage.read_bytes(f"{self.uri}/{name}").decode("utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    records.setdefault(rec["key"], rec)
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s/%s: skipped an unreadable line", self.uri, name)
        if len(names) > 1:  # compact: write the merged shard before removing the parts (a kill keeps both)
            self._put([json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()])
            for name in names:
                storage.delete_key(f"{self.uri}/{name}")
        if records:
            log.info("enrich: %d answer(s) from earlier attempts of this run (%s)", len(records), self.uri)
        return list(records.values())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="enrich-cache-sync", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            if len(self._pending) >= self.flush_every:
                self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._put_lock:
            with self._lock:
                lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                self._put(lines)
                self.flushed += len(lines)
            except storage.StorageError as exc:  # keep them for the next flush; the local cache has them too
                log.warning("enrich: could not save %d answer(s) to %s (will retry): %s", len(lines), self.uri, exc)
                with self._lock:
                    self._pending[:0] = lines

    def _put(self, lines: list[str]) -> None:
        self._seq += 1
        storage.put_bytes(f"{self.uri}/{SHARD_PREFIX}{self.attempt}-{self._seq:06d}.jsonl",
                          "".join(lines).encode("utf-8"))

    def close(self) -> None:
        """Stop the thread and flush what is left (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
