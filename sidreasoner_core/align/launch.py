"""Multi-process SFT through `accelerate launch` (DeepSpeed ZeRO-2/3 on the cluster).

`train_sft` calls `launch_multi_process` when `SFTOptions.num_gpus > 1` or a DeepSpeed stage is
chosen. It writes the records and options to `out_dir/_launch/`, runs

    accelerate launch --config_file accelerate_configs/zero{2,3}.yaml --num_processes N \
        -m sidreasoner_core.align.launch out_dir/_launch/job.json

and loads the result back (the model from `out_dir/final`). Nothing here imports DeepSpeed: on a
CPU machine only the command is built (tests check it), the launch itself needs GPUs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .config import SFTOptions

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
LAUNCH_DIR = "_launch"
FINAL_DIR = "final"


def accelerate_config(deepspeed: str) -> Path:
    """The accelerate YAML for a DeepSpeed stage ("zero2" / "zero3"); "none" -> plain multi-GPU DDP."""
    if deepspeed == "none":
        return CONFIG_DIR / "multi_gpu.yaml"
    path = CONFIG_DIR / f"{deepspeed}.yaml"
    if not path.is_file():
        raise ValueError(f"deepspeed={deepspeed!r}: no accelerate config {path.name} (have: zero2, zero3, none)")
    return path


def launch_command(job: Path, opts: SFTOptions) -> list[str]:
    precision = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}.get(opts.precision, "bf16")
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config(opts.deepspeed)),
            "--num_processes", str(opts.num_gpus), "--mixed_precision", precision,
            "-m", "sidreasoner_core.align.launch", str(job)]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_job(model, train: list[dict], evals: list[dict], opts: SFTOptions, out_dir: Path, *,
              sid_tokens=None, early_stopping_task=None, tokenizer=None) -> Path:
    d = Path(out_dir) / LAUNCH_DIR
    d.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, (str, os.PathLike)):  # an in-memory model crosses the process boundary as a directory
        base = d / "base"
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        model = base
    _write_jsonl(d / "train.jsonl", train)
    _write_jsonl(d / "eval.jsonl", evals)
    job = {"model": str(model), "opts": opts.model_dump(mode="json"), "out_dir": str(out_dir),
           "sid_tokens": list(sid_tokens) if sid_tokens else None, "early_stopping_task": early_stopping_task}
    (d / "job.json").write_text(json.dumps(job))
    return d / "job.json"


def launch_multi_process(model, train, evals, opts: SFTOptions, out_dir: Path, *, sid_tokens=None,
                         early_stopping_task=None, tokenizer=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .sft import SFTResult

    job = write_job(model, train, evals, opts, out_dir, sid_tokens=sid_tokens,
                    early_stopping_task=early_stopping_task, tokenizer=tokenizer)
    cmd = launch_command(job, opts)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, "SIDREASONER_SFT_WORKER": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"multi-process SFT failed (exit {proc.returncode}): {' '.join(cmd)}")
    final = Path(out_dir) / FINAL_DIR
    info = json.loads((Path(out_dir) / "sft_result.json").read_text())
    m = info["metrics"]
    return SFTResult(
        model=AutoModelForCausalLM.from_pretrained(final), tokenizer=AutoTokenizer.from_pretrained(final),
        global_step=int(m["global_step"]), tasks=info["tasks"], best_metric=m.get("best_metric"),
        best_checkpoint=info.get("best_checkpoint"), resumed_from=info.get("resumed_from"),
        train_loss=m.get("train_loss"),
        train_losses={k[len("train_loss_"):]: v for k, v in m.items() if k.startswith("train_loss_")},
        eval_losses={k[len("eval_loss_"):]: v for k, v in m.items() if k.startswith("eval_loss_")},
        log_history=info.get("log_history", []))


def worker_main(job_path: str) -> None:
    """Runs in every process of the launch: train, then save the (gathered) model once."""
    from .sft import train_sft

    job = json.loads(Path(job_path).read_text())
    d = Path(job_path).parent
    opts = SFTOptions.model_validate(job["opts"])
    result = train_sft(job["model"], _read_jsonl(d / "train.jsonl"), _read_jsonl(d / "eval.jsonl"), opts,
                       job["out_dir"], sid_tokens=job["sid_tokens"], early_stopping_task=job["early_stopping_task"])
    final = Path(job["out_dir"]) / FINAL_DIR
    result.trainer.save_model(str(final))  # gathers ZeRO-3 shards; writes on the main process only
    if result.trainer.is_world_process_zero():
        result.tokenizer.save_pretrained(final)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker_main(sys.argv[1])
