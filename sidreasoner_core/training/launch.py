"""The one multi-process launcher: any trainer runs in `accelerate launch` workers (DeepSpeed
ZeRO-2/3 or plain DDP on the cluster), with the accelerate configs of `accelerate_configs/`.

A trainer hands over a JSON payload and the name of its worker function:

    launch("sidreasoner_core.training.sft:worker", payload, job_dir, num_gpus=8, deepspeed="zero3",
           precision="auto")

runs

    accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 8 \
        --mixed_precision bf16 -m sidreasoner_core.training.launch job_dir/job.json

and every worker calls `worker(payload, job_dir)`. Workers see `WORKER_ENV`, so a trainer never
launches again from inside a worker. Nothing here imports DeepSpeed: on a CPU machine only the
command is built (tests check it); the launch itself needs GPUs.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .runtime import ACCELERATE_PRECISION, resolve_precision

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
WORKER_ENV = "SIDREASONER_TRAINING_WORKER"  # set in every launched worker: never launch again
JOB_FILE = "job.json"


def in_worker() -> bool:
    return bool(os.environ.get(WORKER_ENV))


def needs_launch(num_gpus: int, deepspeed: str) -> bool:
    """Several GPUs or a DeepSpeed stage need workers; inside a worker, never."""
    return (num_gpus > 1 or deepspeed != "none") and not in_worker()


def accelerate_config(deepspeed: str) -> Path:
    """The accelerate YAML for a DeepSpeed stage ("zero2" / "zero3"); "none" -> plain multi-GPU DDP."""
    if deepspeed == "none":
        return CONFIG_DIR / "multi_gpu.yaml"
    path = CONFIG_DIR / f"{deepspeed}.yaml"
    if not path.is_file():
        raise ValueError(f"deepspeed={deepspeed!r}: no accelerate config {path.name} (have: zero2, zero3, none)")
    return path


def launch_command(job: Path, num_gpus: int, deepspeed: str, precision: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config(deepspeed)),
            "--num_processes", str(num_gpus), "--mixed_precision", ACCELERATE_PRECISION[resolve_precision(precision)],
            "-m", "sidreasoner_core.training.launch", str(job)]


def write_job(entry: str, payload: dict, job_dir: Path) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / JOB_FILE
    path.write_text(json.dumps({"entry": entry, "payload": payload}))
    return path


def launch(entry: str, payload: dict, job_dir: str | Path, *, num_gpus: int, deepspeed: str, precision: str) -> Path:
    """Run `entry` ("module:function") in `num_gpus` accelerate workers; returns the job directory."""
    job = write_job(entry, payload, Path(job_dir))
    cmd = launch_command(job, num_gpus, deepspeed, precision)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, WORKER_ENV: "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"multi-process training failed (exit {proc.returncode}): {' '.join(cmd)}")
    return job.parent


def worker_main(job_path: str) -> None:
    """Runs in every launched process: the trainer's worker function with its payload."""
    job = json.loads(Path(job_path).read_text())
    module, name = job["entry"].split(":")
    getattr(importlib.import_module(module), name)(job["payload"], Path(job_path).parent)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker_main(sys.argv[1])
