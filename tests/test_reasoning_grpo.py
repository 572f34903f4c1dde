"""GRPO on the tiny model: learning on a planted task, resume after a kill, the vLLM regex."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reasoning_helpers import (expected_sid_reward, one_torch_thread, planted_catalogue, planted_rows, teach_format,
                               tiny_sid_model)
from sidreasoner_core.reasoning import grpo
from sidreasoner_core.reasoning.callbacks import CurveLog, curve_callback
from sidreasoner_core.reasoning.config import GRPOStageConfig
from sidreasoner_core.sid import Catalogue
from sidreasoner_core.training import launch
from sidreasoner_core.training.checkpoints import checkpoint_step, last_complete_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny model that answers `<think>\\nok\\n</think>\\n\\n<random catalogue SID>`; the target is fixed."""
    root = tmp_path_factory.mktemp("planted")
    sid_by_item = planted_catalogue()
    rows = planted_rows(sid_by_item, n=16)
    model_dir = tiny_sid_model(root / "base")
    teach_format(model_dir, sid_by_item, rows)
    return {"model": model_dir, "sids": sid_by_item, "rows": rows, "catalogue": Catalogue(sid_by_item)}


def small_config(**kw) -> GRPOStageConfig:
    base = dict(num_generations=8, prompts_per_step=4, per_device_train_batch_size=32, max_completion_length=12,
                learning_rate=1e-3, beta=0.0, max_steps=10, save_steps=100, eval_samples=0, logging_steps=1)
    return GRPOStageConfig(**{**base, **kw})


def test_grpo_raises_expected_reward_on_planted_task(planted, tmp_path):
    before = expected_sid_reward(planted["model"], planted["rows"][:8])
    curves = CurveLog(tmp_path / "curves.jsonl")
    info = grpo.train(small_config(), planted["model"], planted["rows"], planted["catalogue"],
                      tmp_path / "ckpt", tmp_path / "final", callbacks=[curve_callback(curves)])
    after = expected_sid_reward(tmp_path / "final", planted["rows"][:8])
    assert info["train_steps"] == 10
    assert after > before + 0.05, (before, after)
    rows = curves.rows()
    logged = {k for r in rows for k in r}
    for key in ("reward", "rewards/prefix_reward/mean", "rewards/validity_reward/mean", "sid/valid_share",
                "reasoning/words", "completions/mean_length"):
        assert key in logged, key


def _weights_sum(state_dict) -> float:
    return float(sum(t.detach().double().sum() for t in state_dict.values()))


@pytest.mark.parametrize("scripted, published", [((0.1, 0.3, 0.2, 0.2), 1), ((0.2, 0.2, 0.1, 0.2), 0),
                                                 ((0.1, 0.1, 0.2, 0.3), 3)])
def test_best_validation_policy_is_kept_and_chosen(planted, tmp_path, monkeypatch, scripted, published):
    """`grpo.publish: best_validation`: real GRPO steps with the validation Recall@10 scripted per step, so
    the best is the input (step 0, ties included), a middle step or the last; the chosen policy has the
    weights the measurement saw at that step, and only one kept best is on disk."""
    from transformers import AutoModelForCausalLM

    from sidreasoner_core.reasoning import callbacks
    from sidreasoner_core.reasoning.stage import published_policy

    seen: dict[int, float] = {}

    def scripted_recall(model, *args, **kwargs):
        step = len(seen)
        seen[step] = _weights_sum(model.state_dict())
        return {"recall@10": scripted[step]}

    monkeypatch.setattr(callbacks, "thinking_recall", scripted_recall)
    cfg = small_config(max_steps=3, eval_samples=2, eval_steps=1, publish="best_validation")
    curves = CurveLog(tmp_path / "curves.jsonl")
    work = tmp_path / "work"
    recall = callbacks.recall_callback(curves, planted["rows"][:2], list(planted["catalogue"].item_by_sid), cfg,
                                       best_dir=work)
    info = grpo.train(cfg, planted["model"], planted["rows"], planted["catalogue"], work / "ckpt", work / "final",
                      callbacks=[curve_callback(curves), recall])
    assert sorted(seen) == [0, 1, 2, 3] and len(set(seen.values())) == 4  # every step moved the weights
    kept = callbacks.best_saved(work)
    assert len(kept) <= 1 and set(kept) <= {1, 2}  # the input and the last policy are not copied
    step, chosen = published_policy(curves.rows(), {0: planted["model"], **kept, info["train_steps"]: work / "final"})
    assert step == published
    weights = AutoModelForCausalLM.from_pretrained(chosen).state_dict()
    assert _weights_sum(weights) == pytest.approx(seen[published], abs=1e-6)


def test_early_stopping_ends_grpo_when_the_validation_curve_stops_rising(planted, tmp_path, monkeypatch):
    """`grpo.early_stopping_patience: 2`: measurements 0.2, 0.3 (best, step 1), 0.25, 0.2 stop training at step 3
    of 6, and the policy published is step 1's; a resumed run counts the measurements up to its checkpoint, so
    one more flat measurement stops it. Without publish best_validation the setting is refused."""
    from sidreasoner_core.reasoning import callbacks
    from sidreasoner_core.reasoning.stage import published_policy

    scripted = iter((0.2, 0.3, 0.25, 0.2))
    monkeypatch.setattr(callbacks, "thinking_recall", lambda *a, **k: {"recall@10": next(scripted)})
    cfg = small_config(max_steps=6, eval_samples=2, eval_steps=1, save_steps=2, publish="best_validation",
                       early_stopping_patience=2)
    curves = CurveLog(tmp_path / "curves.jsonl")
    work = tmp_path / "work"

    def recall():
        return callbacks.recall_callback(curves, planted["rows"][:2], list(planted["catalogue"].item_by_sid), cfg,
                                         best_dir=work)

    info = grpo.train(cfg, planted["model"], planted["rows"], planted["catalogue"], work / "ckpt", work / "final",
                      callbacks=[curve_callback(curves), recall()])
    assert info["train_steps"] == 3
    assert [r["step"] for r in curves.rows() if "eval/recall@10" in r] == [0, 1, 2, 3]
    step, _ = published_policy(curves.rows(), {0: planted["model"], **callbacks.best_saved(work), 3: work / "final"})
    assert step == 1

    # resumed from checkpoint-2 (the measurement at step 3 is redone): 0.25 at step 2 counted, one more flat one stops
    shutil.rmtree(work / "final")
    shutil.rmtree(work / "ckpt" / "checkpoint-3", ignore_errors=True)
    scripted = iter((0.1,))
    info = grpo.train(cfg, planted["model"], planted["rows"], planted["catalogue"], work / "ckpt", work / "final",
                      callbacks=[curve_callback(curves), recall()])
    assert (info["resumed_from_step"], info["train_steps"]) == (2, 3)
    with pytest.raises(ValueError, match="early_stopping_patience needs publish 'best_validation'"):
        small_config(eval_samples=2, early_stopping_patience=2)


def _rank_decides(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from sidreasoner_core.training.runtime import rank_zero_decides

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:  # only rank 0 measured a flat curve; rank 1 has nothing to go on
        Path(out, f"rank{rank}").write_text(str(rank_zero_decides(rank == 0)))
    finally:
        dist.destroy_process_group()


def test_early_stopping_reaches_every_rank(tmp_path):
    """Two gloo processes (as GRPO's launched workers): rank 0's decision to stop is what both act on."""
    import torch.multiprocessing as mp
    from conftest import free_port

    mp.spawn(_rank_decides, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["True", "True"]


class Crash(Exception):
    pass


def test_killed_grpo_run_resumes_from_checkpoint(planted, tmp_path):
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise Crash("killed")

    cfg = small_config(max_steps=4, save_steps=2, num_generations=2, prompts_per_step=2, learning_rate=1e-4)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        grpo.train(cfg, planted["model"], planted["rows"], planted["catalogue"], ckpt, tmp_path / "final",
                   callbacks=[CrashAt()])
    assert last_complete_checkpoint(ckpt).endswith("checkpoint-2")
    assert not (tmp_path / "final").exists()
    info = grpo.train(cfg, planted["model"], planted["rows"], planted["catalogue"], ckpt, tmp_path / "final")
    assert info["resumed_from_step"] == 2 and info["train_steps"] == 4
    assert (tmp_path / "final" / "config.json").is_file()


def test_batch_plan_uses_paper_units():
    assert grpo.batch_plan(GRPOStageConfig()) == {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 256}
    assert grpo.batch_plan(GRPOStageConfig(), world_size=8) == {"per_device_train_batch_size": 16,
                                                                 "gradient_accumulation_steps": 32}
    with pytest.raises(ValueError, match="not divisible"):
        grpo.batch_plan(GRPOStageConfig(prompts_per_step=3, num_generations=3, per_device_train_batch_size=2))


def test_paper_defaults_and_vllm_regex():
    import re

    cfg = GRPOStageConfig()
    assert (cfg.num_generations, cfg.temperature, cfg.beta, cfg.epsilon, cfg.learning_rate,
            cfg.max_completion_length, cfg.reward.format_weight) == (16, 1.0, 1e-3, 0.2, 1e-6, 1024, 0.1)
    cat = Catalogue({"x": "<a_1><b_2><c_3>", "y": "<a_1><b_2><c_4>"})
    rx = re.compile(grpo.vllm_sid_regex(cat))
    assert rx.fullmatch("<think>\nhmm\n</think>\n\n<a_1><b_2><c_4>")
    assert not rx.fullmatch("<think>\nhmm\n</think>\n\n<a_1><b_2><c_5>")
    bounded = re.compile(grpo.vllm_sid_regex(cat, max_completion_tokens=40))  # 40 - (8 + 2 + 15 + 1) = 14 chars
    assert bounded.fullmatch("<think>\nhmm\n</think>\n\n<a_1><b_2><c_4>")
    assert not bounded.fullmatch("<think>\n" + "x" * 20 + "\n</think>\n\n<a_1><b_2><c_4>")
    for r in (rx, bounded):  # a `</think>` inside the reasoning would be parsed as its end
        assert not r.fullmatch("<think>\nh</think>m\n</think>\n\n<a_1><b_2><c_4>")
        # non-ASCII (several byte tokens per character) would break the token bound
        assert not r.fullmatch("<think>\nh\u00e9\n</think>\n\n<a_1><b_2><c_4>")
    with pytest.raises(ValueError, match="max_completion_length 20 leaves no room"):
        grpo.vllm_sid_regex(cat, max_completion_tokens=20)
    with pytest.raises(ValueError, match="vllm_server_base_url"):
        GRPOStageConfig(use_vllm=True, vllm_mode="server")


def test_clip_higher_reaches_trl(planted, tmp_path):
    assert grpo.grpo_args(small_config(), tmp_path, planted["catalogue"], [1.0, 0.1]).epsilon_high is None  # = epsilon
    args = grpo.grpo_args(small_config(epsilon_high=0.28), tmp_path, planted["catalogue"], [1.0, 0.1])
    assert (args.epsilon, args.epsilon_high) == (0.2, 0.28)


def test_vllm_needs_vllm(planted, tmp_path):
    with pytest.raises(RuntimeError, match="needs vLLM"):
        grpo.grpo_args(small_config(use_vllm=True), tmp_path, planted["catalogue"], [1.0, 0.1])


def test_constrained_rollouts_only_write_catalogue_sids(planted, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from sidreasoner_core.decoding.thinking_constraint import thinking_sid_logits_processor
    from sidreasoner_core.reasoning.rewards import parse_prediction

    tok = AutoTokenizer.from_pretrained(planted["model"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(planted["model"])
    # a catalogue of 6 SIDs: random rollouts of the format-taught model mostly miss it
    small = Catalogue(dict(list(planted["sids"].items())[:6]))
    proc = thinking_sid_logits_processor(tok, small)
    prompt = tok.apply_chat_template(planted["rows"][0]["prompt"], tokenize=False, add_generation_prompt=True)
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)

    def sample(processors):
        torch.manual_seed(0)
        out = model.generate(**enc, do_sample=True, max_new_tokens=14, num_return_sequences=16,
                             pad_token_id=tok.pad_token_id, logits_processor=processors)
        preds = [parse_prediction(t) for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:])]
        return [p for p in preds if p.has_think_close]

    free = sample(LogitsProcessorList())
    constrained = sample(LogitsProcessorList([proc]))
    assert constrained and all(p.parsed and p.sid in small for p in constrained)
    assert any(not (p.parsed and p.sid in small) for p in free)


def test_grpo_with_constrained_rollouts_runs(planted, tmp_path):
    cfg = small_config(max_steps=1, num_generations=2, prompts_per_step=2, constrained_sid=True)
    trainer = grpo.make_trainer(cfg, planted["model"], planted["rows"], planted["catalogue"], tmp_path / "ckpt")
    assert type(trainer).__name__ == "ConstrainedGRPOTrainer"
    calls = []
    constraint = trainer.sid_logits_processor

    def counted(input_ids, scores):
        calls.append(input_ids.shape[0])
        return constraint(input_ids, scores)

    trainer.sid_logits_processor = counted
    trainer.train()
    assert trainer.state.global_step == 1
    assert calls, "the rollouts never went through the catalogue constraint"
    assert "generate" not in vars(trainer.model)  # the patched generate is removed after the rollout


def test_multi_gpu_launch_command_and_worker(planted, tmp_path, monkeypatch):
    import subprocess

    cfg = small_config(max_steps=1, num_generations=2, prompts_per_step=2)
    zero3 = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"num_gpus": 8, "deepspeed": "zero3"})})
    assert launch.needs_launch(zero3.cluster.num_gpus, zero3.cluster.deepspeed)
    assert not launch.needs_launch(cfg.cluster.num_gpus, cfg.cluster.deepspeed)
    # The launch as the launcher makes it, with each process's code run here in this one CPU process
    # (no GPUs to start 8 workers on).
    ran = []

    def run_here(cmd, env):
        ran.append((cmd, env))
        monkeypatch.setenv(launch.WORKER_ENV, env[launch.WORKER_ENV])
        launch.worker_main(cmd[-1])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", run_here)
    info = grpo.launch(zero3, planted["model"], planted["rows"], planted["catalogue"], tmp_path / "ckpt",
                       tmp_path / "final", tmp_path / "curves.jsonl", [])
    (cmd, env), = ran
    assert cmd[cmd.index("--config_file") + 1].endswith("zero3.yaml") and env[launch.WORKER_ENV] == "1"
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-3:] == ["-m", "sidreasoner_core.training.launch", str(tmp_path / "ckpt" / launch.JOB_FILE)]
    assert info["train_steps"] == 1
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "curves.jsonl").is_file()


def test_sigkilled_grpo_process_resumes(planted, tmp_path):
    """A real kill: the launched-worker entry point runs in a subprocess, is SIGKILLed after its
    second checkpoint, and the rerun continues from there to the end."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    # Enough steps that the worker cannot finish between two polls on an idle machine.
    steps = 30
    cfg = small_config(max_steps=steps, save_steps=1, num_generations=2, prompts_per_step=2, learning_rate=1e-4)
    ckpt = tmp_path / "ckpt"
    payload = {"config": cfg.model_dump(mode="json"), "model_dir": str(planted["model"]), "train_rows": planted["rows"],
               "sid_by_item": planted["catalogue"].sid_by_item, "output_dir": str(ckpt),
               "final_dir": str(tmp_path / "final"), "curves_path": str(tmp_path / "curves.jsonl"), "eval_rows": []}
    job = launch.write_job("sidreasoner_core.reasoning.grpo:worker", payload, ckpt)
    env = {**os.environ, "OMP_NUM_THREADS": "1", launch.WORKER_ENV: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sidreasoner_core.training.launch", str(job)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (ckpt / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, "worker ended before its second checkpoint"
            assert time.time() < deadline, "no checkpoint-2 in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "final").exists()
    killed_at = checkpoint_step(last_complete_checkpoint(ckpt))
    assert 2 <= killed_at < steps
    launch.worker_main(str(job))
    info = json.loads((ckpt / grpo.RESULT_FILE).read_text())
    assert info["resumed_from_step"] == killed_at and info["train_steps"] == steps


def test_constraint_after_a_multi_token_close(planted):
    """`</think>` as a token sequence (as in SmolLM2): the SID constraint starts after the sequence."""
    import torch
    from transformers import AutoTokenizer

    from sidreasoner_core.decoding.constrained import SIDTrie
    from sidreasoner_core.decoding.thinking_constraint import ThinkingSIDLogitsProcessor, whitespace_token_ids

    tok = AutoTokenizer.from_pretrained(planted["model"])
    cat = Catalogue({"x": "<a_1><b_2><c_3>", "y": "<a_1><b_0><c_3>"})
    close = tok("ab", add_special_tokens=False)["input_ids"][:1] + tok("cd", add_special_tokens=False)["input_ids"][:1]
    proc = ThinkingSIDLogitsProcessor(SIDTrie.build(list(cat.item_by_sid), tok), close, tok.eos_token_id,
                                      whitespace_token_ids(tok))
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    vocab = tok.get_vocab()
    scores = torch.zeros(1, len(tok))

    def allowed(seq):
        return {tok.convert_ids_to_tokens(i) for i in torch.nonzero(proc(torch.tensor([seq]), scores.clone())[0] > -1e9).flatten().tolist()}

    prompt = ids("Which item")
    assert len(allowed(prompt + [close[0]])) == len(tok)          # half a close: still reasoning
    after_close = allowed(prompt + close)
    assert "<a_1>" in after_close and "<a_0>" not in after_close and "<b_2>" not in after_close
    assert allowed(prompt + close + [vocab["<a_1>"]]) == {"<b_0>", "<b_2>"}
    assert allowed(prompt + close + [vocab["<a_1>"], vocab["<b_2>"], vocab["<c_3>"]]) == {tok.eos_token}


def test_batched_rollout_constraint_equals_the_row_by_row_rule(planted):
    """The processor masks all rows of a rollout step at once; on a batch holding every phase (still
    reasoning, just closed, separators, inside the SID, SID complete, a two-token close) it gives,
    row by row, what the rule says: free before the close, separator or first SID token after it,
    then the trie from where the SID started, then end of turn."""
    import torch
    from transformers import AutoTokenizer

    from sidreasoner_core.decoding.constrained import SIDTrie, TrieLogitsProcessor
    from sidreasoner_core.decoding.thinking_constraint import ThinkingSIDLogitsProcessor, whitespace_token_ids

    tok = AutoTokenizer.from_pretrained(planted["model"])
    cat = Catalogue({"x": "<a_1><b_2><c_3>", "y": "<a_1><b_0><c_3>", "z": "<a_2><b_2><c_1>"})
    trie = SIDTrie.build(list(cat.item_by_sid), tok)
    vocab = tok.get_vocab()
    space = whitespace_token_ids(tok)
    for close in ([vocab["</think>"]] if "</think>" in vocab else [],
                  tok("ab", add_special_tokens=False)["input_ids"][:1] + tok("cd", add_special_tokens=False)["input_ids"][:1]):
        if not close:
            continue
        proc = ThinkingSIDLogitsProcessor(trie, close, tok.eos_token_id, space)
        word = tok("Which item", add_special_tokens=False)["input_ids"]
        sid = [vocab["<a_1>"], vocab["<b_2>"], vocab["<c_3>"]]
        tails = [[], close, close + [space[0]], close + [space[0], space[0]], close + sid[:1],
                 close + [space[0]] + sid[:2], close + sid, close + [space[0], space[0]] + sid[:1], word[:1]]
        width = max(map(len, tails)) + len(word) + 1
        rows = [[tok.pad_token_id or 0] * (width - len(word) - len(t)) + word + t for t in tails]
        torch.manual_seed(0)
        scores = torch.randn(len(rows), len(tok))
        got = proc(torch.tensor(rows), scores.clone())

        def expected(row, s):  # the rule, one row at a time
            r = torch.tensor(row)
            ends = [i + len(close) for i in range(len(row) - len(close) + 1) if row[i:i + len(close)] == close]
            if not ends:
                return s
            after = ends[-1]
            n = 0
            while after + n < len(row) and row[after + n] in space:
                n += 1
            if after + n == len(row):
                allowed = trie.tokens[0].tolist() + (space if n < 2 else [])
                out = torch.full_like(s, float("-inf"))
                out[allowed] = s[allowed]
                return out
            return TrieLogitsProcessor(trie, after + n, tok.eos_token_id)(r[None], s[None])[0]

        for i, row in enumerate(rows):
            assert torch.equal(got[i], expected(row, scores[i])), f"row {i}: tail {tails[i]}"


def test_completion_only_logprobs_give_the_same_log_probs_and_gradients(planted):
    """On CPU TRL's fused LM head scores every position (prompt and padding too); inside
    `completion_only_logprobs` it scores the labelled ones only, with the same log-probs and gradients."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils as trl_utils

    from sidreasoner_core.training import runtime

    model = AutoModelForCausalLM.from_pretrained(planted["model"])
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    torch.manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0                      # left padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :7] = -100                 # only the last 5 tokens are the completion

    def run():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), out.entropy.detach(), model.get_output_embeddings().weight.grad.clone()

    assert not trl_utils._use_triton(torch.device("cpu"))
    every = run()
    with runtime.completion_only_logprobs():
        assert trl_utils._use_triton(torch.device("cpu"))
        compact = run()
    assert not trl_utils._use_triton(torch.device("cpu"))   # restored
    scored = labels[:, 1:] != -100
    assert torch.allclose(every[0][scored], compact[0][scored], atol=1e-5)
    assert torch.allclose(every[1][scored], compact[1][scored], atol=1e-5)
    assert torch.allclose(every[2], compact[2], atol=1e-5)


def test_likelihood_reward_is_the_policys_probability_of_the_target_after_the_trace(planted):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sidreasoner_core.reasoning.rewards import TargetLikelihood

    tok = AutoTokenizer.from_pretrained(planted["model"])
    model = AutoModelForCausalLM.from_pretrained(planted["model"])
    reward = TargetLikelihood(tok, batch_size=2).bind(model)
    row, other = planted["rows"][0], next(s for s in planted["sids"].values() if s != planted["rows"][0]["target_sid"])
    completions = ["<think>\nok\n</think>\n\n" + other, "<think>\nthe user likes tools\n</think>\n\n" + other,
                   "<think>\nnever closed"]
    got = reward([row["prompt"]] * 3, completions, target_sid=[row["target_sid"]] * 3)
    assert got[2] == 0.0  # no </think>: nothing to condition on
    # by hand: the prompt, the rollout's reasoning, then the target SID teacher-forced (not the rollout's SID)
    prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    target_ids = tok(row["target_sid"], add_special_tokens=False)["input_ids"]
    for completion, value in zip(completions[:2], got[:2]):
        ids = tok(prompt + completion.split("</think>")[0] + "</think>\n\n" + row["target_sid"],
                  add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        n = len(target_ids)
        want = math.exp(sum(logp[ids.shape[1] - n - 1 + j, target_ids[j]].item() for j in range(n)) / n)
        assert value == pytest.approx(want, rel=1e-4)
    assert got[0] != got[1]  # different reasoning, different reward: the dense signal GRPO needs
    assert model.training is False  # restored as found


def test_grpo_with_the_likelihood_reward_logs_and_weights_it(planted, tmp_path):
    from sidreasoner_core.reasoning.rewards import TargetLikelihood

    cfg = small_config(max_steps=1, num_generations=2, prompts_per_step=2, reward={"likelihood_weight": 0.5})
    curves = CurveLog(tmp_path / "curves.jsonl")
    trainer = grpo.make_trainer(cfg, planted["model"], planted["rows"], planted["catalogue"], tmp_path / "ckpt",
                                callbacks=[curve_callback(curves)])
    likelihood = trainer.reward_funcs[-1]
    assert isinstance(likelihood, TargetLikelihood) and likelihood.model is trainer.model
    assert list(trainer.reward_weights) == [1.0, 0.1, 0.5]
    trainer.train()
    values = [r["rewards/likelihood_reward/mean"] for r in curves.rows() if "rewards/likelihood_reward/mean" in r]
    assert values and 0.0 < values[0] <= 1.0


def test_likelihood_reward_scored_by_the_frozen_reference(planted, tmp_path):
    import torch

    cfg = small_config(max_steps=1, num_generations=2, prompts_per_step=2, beta=0.01,
                       reward={"likelihood_weight": 0.5, "likelihood_model": "reference"})
    trainer = grpo.make_trainer(cfg, planted["model"], planted["rows"], planted["catalogue"], tmp_path / "ckpt")
    scorer = trainer.reward_funcs[-1].model
    assert scorer is trainer.ref_model and scorer is not trainer.model
    before = [p.detach().clone() for p in scorer.parameters()]
    trainer.train()
    # the policy moved, the scorer did not: the reward stays the function it was at the start
    assert all(torch.equal(a, b) for a, b in zip(before, scorer.parameters()))
    with pytest.raises(ValueError, match="likelihood_model 'reference' needs beta > 0"):
        small_config(beta=0.0, reward={"likelihood_weight": 0.5, "likelihood_model": "reference"})


def test_rollout_reasoning_budget_closes_every_trace_into_a_catalogue_sid(planted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from sidreasoner_core.decoding.thinking_constraint import close_token_ids, thinking_sid_logits_processor
    from sidreasoner_core.reasoning.rewards import parse_prediction

    tok = AutoTokenizer.from_pretrained(planted["model"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(planted["model"])
    prompt = tok.apply_chat_template(planted["rows"][0]["prompt"], tokenize=False, add_generation_prompt=True)
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    close = close_token_ids(tok)[0]
    budget = 3

    def rollouts(proc, inputs=enc):
        torch.manual_seed(0)
        proc.reset()   # as the constrained trainer does before each generate call
        out = model.generate(**inputs, do_sample=True, temperature=3.0, max_new_tokens=12, num_return_sequences=16,
                             pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList([proc]))
        return out[:, inputs["input_ids"].shape[1]:]

    # hot sampling: without a budget some rollouts ramble past 3 tokens or end (EOS) without closing
    free = rollouts(thinking_sid_logits_processor(tok, planted["catalogue"]))
    assert any(close not in row[:budget + 1].tolist() for row in free)
    forced = rollouts(thinking_sid_logits_processor(tok, planted["catalogue"], reasoning_budget=budget))
    for row in forced:
        assert close in row[:budget + 1].tolist()  # closed at the latest as token budget + 1
        pred = parse_prediction(tok.decode(row, skip_special_tokens=False))
        assert pred.has_think_close and pred.parsed and pred.sid in planted["catalogue"]
    # a processor first used on a longer prompt counts its next call's budget from that call's prompt (reset)
    reused = thinking_sid_logits_processor(tok, planted["catalogue"], reasoning_budget=budget)
    rollouts(reused, tok([prompt + "ok ok ok ok ok ok"], return_tensors="pt", add_special_tokens=False))
    assert torch.equal(rollouts(reused), forced)


def test_rollout_reasoning_budget_needs_the_constraint_and_room():
    with pytest.raises(ValueError, match="constrained_sid"):
        small_config(rollout_reasoning_budget=4)
    with pytest.raises(ValueError, match="leave room"):
        small_config(constrained_sid=True, rollout_reasoning_budget=12)
    assert small_config(constrained_sid=True, rollout_reasoning_budget=4).rollout_reasoning_budget == 4
