"""The GPUs a training step sees, against the GPUs its run asked for.

The pipeline's `train_gpus` sets both the pod's accelerator limit and the launcher's process
count. If the pod sees another number of CUDA devices (a node with a broken device plugin, a
MIG profile, CUDA_VISIBLE_DEVICES set by hand) the launcher would start the wrong number of
workers or wait on NCCL forever; the step fails at once with both numbers instead.
"""
from __future__ import annotations

import os


# Set by the CPU rehearsal (pipelines/rehearsal.py) where CPU processes stand in for a placement's GPUs.
CPU_STANDIN_ENV = "SIDREASONER_CPU_STANDS_IN_FOR_GPUS"


class DeviceMismatch(RuntimeError):
    """The step sees a different number of GPUs than the run asked for."""


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_visible_gpus(expected: int, stage: str, visible: int | None = None) -> int:
    """Raise `DeviceMismatch` unless the step sees `expected` CUDA devices. A one-process run
    with no GPU at all is a CPU run (local `kfp.local`, tests) and passes, as does a CPU rehearsal
    (`CPU_STANDIN_ENV`) of a multi-GPU step. Returns `visible`."""
    visible = visible_gpus() if visible is None else visible
    if visible == expected or (visible == 0 and (expected <= 1 or os.environ.get(CPU_STANDIN_ENV) == "1")):
        return visible
    raise DeviceMismatch(
        f"{stage}: the run asks for train_gpus={expected} (the launcher's process count) but this pod sees "
        f"{visible} CUDA device(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
        f"set train_gpus to the GPUs a node of this gpu_type gives one pod")
