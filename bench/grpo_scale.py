"""GRPO at a scale that can move the model (issue 16): rollouts/s and step time of the pipeline's
GRPO (TRL `GRPOTrainer`, transformers generation with the catalogue constraint) for each step size
(prompts per step x 8 rollouts) and each way of scoring the log-probs, in one run on the same model
and prompts. Scoring: "all" is TRL as shipped on CPU (its fused LM head scores every position,
prompt and padding too), "completion" the pipeline's (`training.runtime.completion_only_logprobs`: only the
completion tokens). The first configuration is the baseline of the speed-ups. The bench also
projects the time of one epoch of the train prompts (10,393 on Industrial) at 8 rollouts each.

The model is a trained one when given (`--model`, `--sids`, `--dataset` of a run: real prompts and reasoning lengths),
else `small-qwen3` with SID tokens. Ends with one JSON line.

    .venv/bin/python bench/grpo_scale.py [--model DIR] [--steps 2] [--sizes 64] [--scoring all,completion]
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
            generations: int, max_completion: int, scoring: str) -> dict:
    import contextlib

    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.grpo import make_trainer
    from sidreasoner_core.training.runtime import completion_only_logprobs

    cfg = GRPOStageConfig(num_generations=generations, prompts_per_step=prompts_per_step,
                          per_device_train_batch_size=min(128, prompts_per_step * generations), max_steps=steps,
                          max_completion_length=max_completion, constrained_sid=True, learning_rate=2e-5,
                          save_steps=10_000, eval_samples=0)
    trainer = make_trainer(cfg, model_dir, rows, catalogue, work / f"p{prompts_per_step}-{scoring}")
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
    with completion_only_logprobs() if scoring == "completion" else contextlib.nullcontext():
        trainer.train()
    wall = time.perf_counter() - started
    step_s = wall / steps
    return {"config": f"p{prompts_per_step}_{scoring}", "prompts_per_step": prompts_per_step, "rollouts": spent["rollouts"],
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
    ap.add_argument("--sizes", default="64", help="prompts per step to compare")
    ap.add_argument("--scoring", default="all,completion",
                    help="log-prob scoring to compare: all (TRL on CPU as shipped), completion (the pipeline's)")
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
        for scoring in args.scoring.split(","):
            res = measure(model_dir, rows, catalogue, work, size, args.steps, args.generations, args.max_completion,
                          scoring)
            print(f"{size:3} prompts x {args.generations} per step, scoring {scoring}: "
                  f"{res['rollouts_per_s_generation']} rollouts/s in generation, {res['step_s']} s per step "
                  f"({res['generation_share']:.0%} generating); one epoch of {TRAIN_PROMPTS} prompts: "
                  f"{res['epoch_min_at_8_rollouts']} min", flush=True)
            results.append(res)
    base = results[0]
    figures = {f"{r['config']}_{k}": v for r in results for k, v in r.items() if k not in ("config", "prompts_per_step")}
    figures.update({f"speedup_{r['config']}_vs_{base['config']}": round(
        r["rollouts_per_s_step"] / base["rollouts_per_s_step"], 2) for r in results[1:]})
    figures.update(model=str(args.model or "small-qwen3"), steps=args.steps, generations=args.generations,
                   max_completion=args.max_completion)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
