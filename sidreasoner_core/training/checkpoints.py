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


# ---------------------------------------------------------------- persistent copies (retried pods)
#
# A retried or preempted pod starts on empty scratch. Each complete checkpoint is copied to the
# step's persistent state (`step_state`): its files under `checkpoint-N/`, then `checkpoint-N.done`
# listing them with their sizes. Only a checkpoint with its marker counts, so a kill during an
# upload leaves an older checkpoint in force; the copies follow the trainer's rotation.

DONE = ".done"


class CheckpointStore:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")

    def complete(self) -> list[str]:
        """Names of the complete checkpoints in the store, newest first."""
        from ..storage import list_keys

        names = [k[:-len(DONE)] for k in list_keys(self.uri) if "/" not in k and k.endswith(DONE)]
        return sorted((n for n in names if n.startswith("checkpoint-") and n.rsplit("-", 1)[-1].isdigit()),
                      key=checkpoint_step, reverse=True)

    def upload(self, ckpt: Path) -> None:
        """Copy the finished checkpoint `ckpt` to the store, then drop copies the trainer rotated away."""
        from ..storage import delete_key, delete_prefix, list_keys, put_bytes, upload_dir

        ckpt = Path(ckpt)
        files = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in sorted(ckpt.rglob("*")) if p.is_file()}
        # saved again after a resume: an old marker must not vouch for a half-overwritten copy
        delete_key(f"{self.uri}/{ckpt.name}{DONE}")
        upload_dir(ckpt, f"{self.uri}/{ckpt.name}")
        put_bytes(f"{self.uri}/{ckpt.name}{DONE}", json.dumps({"files": files}).encode())
        kept = {p.name for p in ckpt.parent.glob("checkpoint-*")}
        stale = {k.split("/", 1)[0].removesuffix(DONE) for k in list_keys(self.uri)} - kept
        for name in sorted(stale):  # marker first: a kill mid-delete leaves files nobody takes for a checkpoint
            delete_key(f"{self.uri}/{name}{DONE}")
            delete_prefix(f"{self.uri}/{name}")
        log.info("checkpoint %s saved to %s", ckpt.name, self.uri)

    def restore(self, ckpt_dir: str | Path) -> str | None:
        """When `ckpt_dir` holds no complete checkpoint, download the newest complete one from the
        store into it; returns the local checkpoint to resume from (None: start fresh)."""
        from ..storage import download_prefix, read_bytes

        ckpt_dir = Path(ckpt_dir)
        local = last_complete_checkpoint(ckpt_dir)
        if local:
            return local
        for name in self.complete():
            listed = json.loads(read_bytes(f"{self.uri}/{name}{DONE}"))["files"]
            part = ckpt_dir / f".{name}.download"
            shutil.rmtree(part, ignore_errors=True)
            download_prefix(f"{self.uri}/{name}", part)
            wrong = [rel for rel, size in listed.items()
                     if not (part / rel).is_file() or (part / rel).stat().st_size != size]
            if wrong:
                log.warning("%s/%s: %d file(s) missing or of the wrong size (e.g. %s); trying an older one",
                            self.uri, name, len(wrong), wrong[0])
                shutil.rmtree(part, ignore_errors=True)
                continue
            part.rename(ckpt_dir / name)
            log.info("restored %s from %s (a retried step resumes there)", name, self.uri)
            return str(ckpt_dir / name)
        return None

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


def persistent_store(step: str, ckpt_dir: str | Path, resume: bool = True) -> CheckpointStore | None:
    """The step's checkpoint store when it keeps persistent state (`step_state`), restored into
    `ckpt_dir` first when that holds no checkpoint and `resume` is on; None otherwise."""
    from ..step_state import step_state_uri

    uri = step_state_uri(step, CHECKPOINTS)
    if uri is None:
        return None
    store = CheckpointStore(uri)
    if resume:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        store.restore(ckpt_dir)
    return store
