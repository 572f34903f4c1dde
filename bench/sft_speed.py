"""SFT speed on CPU (alignment and cold-start, paper §3.2-3.3.1): seconds per step of the pipeline's SFT
(TRL `SFTTrainer` via `training.sft.build_trainer`) on alignment-shaped rows (a history of 10 SIDs
-> the next SID: the prompt is nearly all of each row), for each way of scoring the loss and each
precision, in one run on the same model, rows and seed. Scoring: "all" is TRL as shipped on CPU (its
fused LM head scores every position, prompt and padding too), "labelled" the pipeline's
(`training.runtime.completion_only_logprobs`). Precision "bf16" is requested as the presets do; on a
CPU without native bf16 (AVX-512 BF16 or AMX) the pipeline trains it in fp32, and `--force-bf16`
measures the emulated bf16 that a preset's bf16 used to mean there. The first configuration is the
baseline of the speed-ups. Ends with one JSON line.

`--align-run RUN_DIR` measures instead on the rows a preset's alignment trains on (its task mix:
short history rows beside longer reasoning rows), read from a finished `sidreasoner run`, with the
preset's scratch model and vocabulary; a third field of a config names the batch order
(`training.sampling`): random batches are padded to their longest row, `length_batches` are not, and
`sorted_micro_batches` cuts each random batch, sorted by length, into the micro-batches that a fourth
field counts (gradient accumulation; the step is still one random batch of `--batch` rows).
Any N steps of either order are a random sample of the epoch's batches, so the mean step time
times the steps per epoch estimates the epoch.

    .venv/bin/python bench/sft_speed.py [--steps 6] [--batch 64] [--configs all:fp32,labelled:fp32,labelled:bf16]
    .venv/bin/python bench/sft_speed.py --align-run runs/<run> --preset default --steps 40 \
        --configs labelled:fp32:random,labelled:fp32:length_batches,labelled:fp32:sorted_micro_batches:4
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ALIGN_STEPS_DEFAULT_PRESET = 684  # `make run`: 3 epochs of alignment at batch 64


def alignment_rows(n: int, history: int = 10, codes: int = 256, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Task-5-shaped records (SID history -> next SID) over a random 3-level catalogue of 3,686 items."""
    from sidreasoner_core import sid as sidlib
    from sidreasoner_core.prompts import sid_history_prompt

    rng = random.Random(seed)
    items = sorted({sidlib.format_sid((rng.randrange(codes), rng.randrange(codes), rng.randrange(codes)))
                    for _ in range(3686)})
    rows = [{"prompt": [{"role": "user", "content": sid_history_prompt(rng.sample(items, history))}],
             "completion": rng.choice(items), "task": "sid_history_to_sid"} for _ in range(n)]
    return rows, sidlib.vocabulary(levels=3, codes_per_level=codes)


def preset_alignment(run_dir: Path, preset: str) -> tuple[list[dict], list[str], str]:
    """(train rows, SID tokens, model path): what `preset`'s alignment trains on, from a finished run's
    dataset, SIDs and corpus artifacts."""
    from sidreasoner_core.align.config import AlignConfig
    from sidreasoner_core.align.stage import training_records, vocabulary_texts
    from sidreasoner_core.models import is_scratch, scratch_with_vocabulary
    from sidreasoner_core.run_config import resolve
    from sidreasoner_core.sid import read_sid_table

    summary = json.loads((run_dir / "summary.json").read_text())
    path = {key.split("/")[-1]: Path(a["path"]) for key, a in summary["artifacts"].items()}
    config = AlignConfig.model_validate(resolve(preset)["align"])
    table = read_sid_table(path["sids"])
    inputs, train, _, _ = training_records(config, path["dataset"], table.sid_by_item, path["corpus"])
    model = config.model
    if config.scratch_vocab_size and is_scratch(model):
        model = str(scratch_with_vocabulary(model, vocabulary_texts(inputs), config.scratch_vocab_size))
    return train, table.vocabulary(), model


def measure(rows: list[dict], sid_tokens: list[str], work: Path, steps: int, batch: int, scoring: str,
            precision: str, force_bf16: bool, sampling: str = "random", model: str = "small-qwen3",
            accumulation: int = 1) -> dict:
    from transformers import TrainerCallback

    from sidreasoner_core.training import runtime
    from sidreasoner_core.training.sft import SFTOptions, build_trainer

    opts = SFTOptions(max_steps=steps, per_device_train_batch_size=batch // accumulation,
                      gradient_accumulation_steps=accumulation,
                      learning_rate=1e-3, logging_steps=1,
                      precision=precision, max_length=160, seed=0, sampling=sampling)
    forced = force_bf16 and precision == "bf16" and not runtime.cpu_has_native_bf16()
    patch = contextlib.nullcontext()
    if forced:
        from unittest import mock

        patch = mock.patch.object(runtime, "cpu_has_native_bf16", lambda: True)
    with patch:
        trainer, _ = build_trainer(model, rows, None, opts, work / f"{scoring}-{precision}-{sampling}-{accumulation}",
                                   sid_tokens=sid_tokens)
        times: list[float] = []
        step_start = [0.0]

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **k):
                step_start[0] = time.perf_counter()

            def on_step_end(self, *a, **k):
                times.append(time.perf_counter() - step_start[0])

        trainer.add_callback(Clock())
        with runtime.completion_only_logprobs() if scoring == "labelled" else contextlib.nullcontext():
            trainer.train()
    steady = times[1:] or times  # the first step pays for warm-up
    step_s = sum(steady) / len(steady)
    trained_as = "bf16" if trainer.args.bf16 else "fp32"
    epoch_steps = math.ceil(len(trainer.train_dataset) / batch)
    split = f"_x{accumulation}" if accumulation > 1 else ""
    return {"config": f"{scoring}_{precision}{'_forced' if forced else ''}{'' if sampling == 'random' else '_' + sampling}{split}",
            # real (unpadded) tokens: a row's mean length x the batch, per second
            "trained_as": trained_as, "step_s": round(step_s, 3), "tokens_per_s": round(
                statistics.mean(map(len, trainer.train_dataset["input_ids"])) * batch / step_s),
            "loss_first_step": round(trainer.state.log_history[0]["loss"], 4),
            "epoch_min": round(epoch_steps * step_s / 60, 2),
            "align_min_at_default_preset": round(ALIGN_STEPS_DEFAULT_PRESET * step_s / 60, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--configs", default="all:fp32,labelled:fp32,labelled:bf16",
                    help="scoring:precision[:sampling[:micro-batches]]; scoring all|labelled, precision fp32|bf16")
    ap.add_argument("--force-bf16", action="store_true",
                    help="train bf16 as emulated bf16 even where the CPU lacks native bf16 (the old behaviour)")
    ap.add_argument("--work", default=str(REPO / "bench_runs" / "sft_speed"))
    ap.add_argument("--align-run", default=None, help="a finished `sidreasoner run`: measure on its alignment rows")
    ap.add_argument("--preset", default="default", help="with --align-run: whose alignment mix and model")
    args = ap.parse_args()

    import torch

    from sidreasoner_core.training.runtime import cpu_has_native_bf16

    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    model = "small-qwen3"
    if args.align_run:
        rows, sid_tokens, model = preset_alignment(Path(args.align_run), args.preset)
    else:
        rows, sid_tokens = alignment_rows(args.steps * args.batch)
    results = []
    for config in args.configs.split(","):
        parts = config.split(":")
        scoring, precision = parts[:2]
        sampling, accumulation = (parts[2] if len(parts) > 2 else "random"), (parts[3] if len(parts) > 3 else "1")
        res = measure(rows, sid_tokens, work, args.steps, args.batch, scoring, precision, args.force_bf16,
                      sampling, model, int(accumulation))
        print(f"scoring {scoring}, precision {precision} (trained as {res['trained_as']}), batches {sampling}: "
              f"{res['step_s']} s per step of {args.batch} rows, {res['tokens_per_s']} tokens/s; first-step loss "
              f"{res['loss_first_step']}; one epoch of these rows {res['epoch_min']} min; alignment of the default "
              f"preset ({ALIGN_STEPS_DEFAULT_PRESET} steps): {res['align_min_at_default_preset']} min", flush=True)
        results.append(res)
    base = results[0]
    figures = {f"{r['config']}_{k}": v for r in results for k, v in r.items() if k != "config"}
    figures.update({f"speedup_{r['config']}_vs_{base['config']}": round(base["step_s"] / r["step_s"], 2)
                    for r in results[1:]})
    figures.update(steps=args.steps, batch=args.batch, rows=len(rows), align_run=args.align_run, threads=torch.get_num_threads(),
                   cpu_native_bf16=cpu_has_native_bf16(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
