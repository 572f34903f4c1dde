"""GRPO at a scale that can move the model (issue 16): rollouts/s and step time of the pipeline's
GRPO (TRL `GRPOTrainer`, transformers generation with the catalogue constraint) when a step holds
8 prompts (the presets' old setting) and 64 prompts (the new), both x 8 rollouts, in one run on the
same model and prompts. TRL generates a whole step's rollouts in one `generate` call, so a larger
step is one batched KV-cache sampling of 512 rollouts instead of 64; the bench also projects the
time of one epoch of the train prompts (10,393 on Industrial) at 8 rollouts each.

The model is a trained one when given (`--model`, `--sids`, `--dataset` of a run: real prompts and reasoning lengths),
else `small-qwen3` with SID tokens. Ends with one JSON line.

    .venv/bin/python bench/grpo_scale.py [--model DIR] [--steps 2] [--sizes 8,64]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN_PROMPTS = 10_393  # Industrial_and_Scientific train samples


def measure(model_dir: Path, rows: list[dict], catalogue, work: Path, prompts_per_step: int, steps: int,
            generations: int, max_completion: int) -> dict:
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.grpo import make_trainer

    cfg = GRPOStageConfig(num_generations=generations, prompts_per_step=prompts_per_step,
                          per_device_train_batch_size=min(128, prompts_per_step * generations), max_steps=steps,
                          max_completion_length=max_completion, constrained_sid=True, learning_rate=2e-5,
                          save_steps=10_000, eval_samples=0)
    trainer = make_trainer(cfg, model_dir, rows, catalogue, work / f"p{prompts_per_step}")
    spent = {"generate_s": 0.0, "rollouts": 0}
    inner = trainer._generate_single_turn

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        spent["generate_s"] += time.perf_counter() - t
        spent["rollouts"] += len(out[0])
        return out

    trainer._generate_single_turn = timed
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    step_s = wall / steps
    return {"prompts_per_step": prompts_per_step, "rollouts": spent["rollouts"],
            "rollouts_per_s_generation": round(spent["rollouts"] / spent["generate_s"], 1),
            "rollouts_per_s_step": round(spent["rollouts"] / wall, 1), "step_s": round(step_s, 2),
            "generation_share": round(spent["generate_s"] / wall, 3),
            "epoch_min_at_8_rollouts": round(TRAIN_PROMPTS / prompts_per_step * step_s / 60, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a trained model artifact or HF dir (default: small-qwen3)")
    ap.add_argument("--sids", default=None, help="with --model: the run's sids artifact")
    ap.add_argument("--dataset", default=None, help="with --model: the run's dataset artifact (train prompts)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sizes", default="8,64", help="prompts per step to compare (the first is the baseline)")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=48)
    ap.add_argument("--work", default=str(REPO / "bench_runs" / "grpo_scale"))
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "bench"))
    from rollouts import catalogue_and_rows, model_with_sid_tokens

    from sidreasoner_core.models import resolve_model_dir

    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.model:  # a trained model scores its own catalogue's SIDs from real histories
        import random

        from sidreasoner_core import sid as sidlib
        from sidreasoner_core.artifacts import open_artifact
        from sidreasoner_core.dataset import read_samples
        from sidreasoner_core.reasoning.samples import sid_rows
        from sidreasoner_core.reasoning.config import PromptConfig

        if not (args.sids and args.dataset):
            raise SystemExit("--model needs --sids and --dataset (the run's artifacts)")
        table = sidlib.read_sid_table(open_artifact(args.sids).path)
        catalogue = sidlib.Catalogue(table.sid_by_item)
        samples = read_samples(open_artifact(args.dataset).path, "train")
        rows = sid_rows(samples, table.sid_by_item, PromptConfig(), max(sizes) * args.steps, seed=0)
        random.Random(0).shuffle(rows)
        model_dir = resolve_model_dir(args.model)
    else:
        catalogue, rows = catalogue_and_rows(40, max(sizes) * args.steps)
        model_dir = model_with_sid_tokens(work / "model", "small-qwen3")
    results = []
    for size in sizes:
        res = measure(model_dir, rows, catalogue, work, size, args.steps, args.generations, args.max_completion)
        print(f"{size:3} prompts x {args.generations} per step: {res['rollouts_per_s_generation']} rollouts/s in "
              f"generation, {res['step_s']} s per step ({res['generation_share']:.0%} generating); one epoch of "
              f"{TRAIN_PROMPTS} prompts: {res['epoch_min_at_8_rollouts']} min", flush=True)
        results.append(res)
    base = results[0]
    figures = {f"p{r['prompts_per_step']}_{k}": v for r in results for k, v in r.items() if k != "prompts_per_step"}
    figures.update({f"speedup_p{r['prompts_per_step']}_rollouts_per_s": round(
        r["rollouts_per_s_step"] / base["rollouts_per_s_step"], 2) for r in results[1:]})
    figures.update(model=str(args.model or "small-qwen3"), steps=args.steps, generations=args.generations,
                   max_completion=args.max_completion)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
