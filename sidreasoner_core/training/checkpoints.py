"""Checkpoints and work directories: where a training step keeps what lets a killed run resume."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


def work_dir_for(out: str, config_work_dir: str | None = None) -> Path:
    """The work directory of a stage writing `out`: `<work_dir>/<hash>` when a volume is configured
    (one volume for many runs), a cache folder for an `s3://` output, else `.<name>.work` beside it."""
    from ..models import cache_root
    from ..storage import is_s3

    out = str(out)
    if config_work_dir:
        return Path(config_work_dir) / hashlib.sha256(out.encode()).hexdigest()[:16]
    if is_s3(out):
        return cache_root() / "align-work" / hashlib.sha256(out.encode()).hexdigest()[:16]
    p = Path(out)
    return p.parent / f".{p.name}.work"


def checkpoint_step(path: str | Path) -> int:
    """N of a `checkpoint-N` directory."""
    return int(Path(path).name.rsplit("-", 1)[-1])


def last_complete_checkpoint(ckpt_dir: str | Path) -> str | None:
    """Newest checkpoint-N with its trainer state and weights; half-written newer ones are removed
    (a kill during a save must not break the resume)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=checkpoint_step, reverse=True)
    for p in found:
        has_weights = any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin")) or any(p.glob("global_step*"))
        if (p / "trainer_state.json").is_file() and has_weights:
            return str(p)
        log.warning("removing incomplete checkpoint %s", p)
        shutil.rmtree(p, ignore_errors=True)
    return None


BEST_PREFIX = "best-"  # `<work>/best-<step>`: a stage's kept policy (GRPO's best validation Recall@10 so far)


def best_saved(work_dir: str | Path) -> dict[int, Path]:
    """{step: directory} of the kept best policies (complete ones only: they are renamed into place)."""
    out = {}
    for d in Path(work_dir).glob(BEST_PREFIX + "*"):
        if d.is_dir() and d.name[len(BEST_PREFIX):].isdigit():
            out[int(d.name[len(BEST_PREFIX):])] = d
    return out


# ---------------------------------------------------------------- persistent copies (retried pods)
#
# A retried or preempted pod starts on empty scratch. Each complete checkpoint is copied to the
# step's persistent state (`step_state`): its files under `checkpoint-N/`, then `checkpoint-N.done`
# listing them with their sizes. Only a checkpoint with its marker counts, so a kill during an
# upload leaves an older checkpoint in force; the copies follow the trainer's rotation.
#
# What the stage keeps beside its checkpoints (`beside`, its work directory) travels with them, so a
# retry resumes with the stage as it was at the checkpoint, not only the trainer: the curves file
# (a snapshot inside each checkpoint: the report keeps the steps before the kill, and GRPO's
# validation baseline survives) and the kept `best-<step>` policies (stored before the checkpoint's
# marker, so a complete checkpoint always has its best; without it a retried GRPO pod would publish
# its last step whatever the validation curve said).

DONE = ".done"


class CheckpointStore:
    def __init__(self, uri: str, beside: str | Path | None = None):
        self.uri = uri.rstrip("/")
        self.beside = Path(beside) if beside is not None else None

    def _complete(self, prefix: str) -> list[str]:
        from ..storage import list_keys

        names = [k[:-len(DONE)] for k in list_keys(self.uri) if "/" not in k and k.endswith(DONE)]
        return sorted((n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()),
                      key=checkpoint_step, reverse=True)

    def complete(self) -> list[str]:
        """Names of the complete checkpoints in the store, newest first."""
        return self._complete("checkpoint-")

    def _put(self, local: Path) -> None:
        """Copy the directory `local` to `<uri>/<name>`, then its marker listing the files and sizes."""
        from ..storage import delete_key, put_bytes, upload_dir

        files = {p.relative_to(local).as_posix(): p.stat().st_size for p in sorted(local.rglob("*")) if p.is_file()}
        # saved again after a resume: an old marker must not vouch for a half-overwritten copy
        delete_key(f"{self.uri}/{local.name}{DONE}")
        upload_dir(local, f"{self.uri}/{local.name}")
        put_bytes(f"{self.uri}/{local.name}{DONE}", json.dumps({"files": files}).encode())

    def _get(self, name: str, parent: Path) -> Path | None:
        """Download the complete copy `name` into `parent/name` (None when a listed file is missing)."""
        from ..storage import download_prefix, read_bytes

        listed = json.loads(read_bytes(f"{self.uri}/{name}{DONE}"))["files"]
        part = parent / f".{name}.download"
        shutil.rmtree(part, ignore_errors=True)
        download_prefix(f"{self.uri}/{name}", part)
        wrong = [rel for rel, size in listed.items()
                 if not (part / rel).is_file() or (part / rel).stat().st_size != size]
        if wrong:
            log.warning("%s/%s: %d file(s) missing or of the wrong size (e.g. %s)", self.uri, name, len(wrong),
                        wrong[0])
            shutil.rmtree(part, ignore_errors=True)
            return None
        part.rename(parent / name)
        return parent / name

    def upload(self, ckpt: Path) -> None:
        """Copy the finished checkpoint `ckpt` (with what the stage keeps beside it) to the store, then drop
        copies the trainer rotated away and kept policies the stage replaced."""
        from ..curves import CURVES_FILE
        from ..storage import delete_key, delete_prefix, list_keys

        ckpt = Path(ckpt)
        kept = {p.name for p in ckpt.parent.glob("checkpoint-*")}
        if self.beside is not None:
            if (self.beside / CURVES_FILE).is_file():
                shutil.copyfile(self.beside / CURVES_FILE, ckpt / CURVES_FILE)
            stored = set(self._complete(BEST_PREFIX))
            for best in best_saved(self.beside).values():
                if best.name not in stored:
                    self._put(best)
                kept.add(best.name)
        self._put(ckpt)
        stale = {k.split("/", 1)[0].removesuffix(DONE) for k in list_keys(self.uri)} - kept
        for name in sorted(stale):  # marker first: a kill mid-delete leaves files nobody takes for a checkpoint
            delete_key(f"{self.uri}/{name}{DONE}")
            delete_prefix(f"{self.uri}/{name}")
        log.info("checkpoint %s saved to %s", ckpt.name, self.uri)

    def restore(self, ckpt_dir: str | Path) -> str | None:
        """When `ckpt_dir` holds no complete checkpoint, download the newest complete one from the
        store into it (and what the stage kept beside it); returns the local checkpoint to resume from
        (None: start fresh)."""
        ckpt_dir = Path(ckpt_dir)
        local = last_complete_checkpoint(ckpt_dir)
        if local:
            return local
        for name in self.complete():
            got = self._get(name, ckpt_dir)
            if got is None:
                log.warning("%s/%s is incomplete; trying an older checkpoint", self.uri, name)
                continue
            self._restore_beside(got)
            log.info("restored %s from %s (a retried step resumes there)", name, self.uri)
            return str(got)
        return None

    def _restore_beside(self, ckpt: Path) -> None:
        """The curves snapshot of `ckpt` (unless the local curves are longer: the file is append-only) and
        the newest kept policy from no later than `ckpt`'s step."""
        from ..curves import CURVES_FILE

        if self.beside is None:
            return
        self.beside.mkdir(parents=True, exist_ok=True)
        snapshot, local = ckpt / CURVES_FILE, self.beside / CURVES_FILE
        if snapshot.is_file() and (not local.is_file() or local.stat().st_size < snapshot.stat().st_size):
            shutil.copyfile(snapshot, local)
        if best_saved(self.beside):
            return
        for name in self._complete(BEST_PREFIX):  # newest first
            if checkpoint_step(name) <= checkpoint_step(ckpt) and self._get(name, self.beside) is not None:
                log.info("restored the kept policy %s from %s", name, self.uri)
                return

    def callback(self):
        """A TrainerCallback that copies each checkpoint to the store once the trainer has saved it."""
        from transformers import TrainerCallback

        from ..storage import StorageError

        store = self

        class CheckpointToStore(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if not state.is_world_process_zero:
                    return
                try:
                    store.upload(Path(args.output_dir) / f"checkpoint-{state.global_step}")
                except StorageError as exc:  # an object-store hiccup must not end hours of training
                    log.warning("checkpoint-%d not copied to %s (the next save tries again): %s",
                                state.global_step, store.uri, exc)

        return CheckpointToStore()


def persistent_store(step: str, ckpt_dir: str | Path, resume: bool = True,
                     beside: str | Path | None = None) -> CheckpointStore | None:
    """The step's checkpoint store when it keeps persistent state (`step_state`), restored into
    `ckpt_dir` (and `beside`, see `CheckpointStore`) first when that holds no checkpoint and `resume`
    is on; None otherwise."""
    from ..step_state import step_state_uri

    uri = step_state_uri(step, CHECKPOINTS)
    if uri is None:
        return None
    store = CheckpointStore(uri, beside)
    if resume:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        store.restore(ckpt_dir)
    return store
