"""Checkpoints and work directories: where a training step keeps what lets a killed run resume."""
from __future__ import annotations

import hashlib
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
