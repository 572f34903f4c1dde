"""Reasoning stages end to end on the shipped sample: cold-start and GRPO steps, KFP components, CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from reasoning_helpers import one_torch_thread, tiny_sid_model, unique_reference_sids, write_sids_artifact
from sidreasoner_core.dataset import read_items, read_samples


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def inputs(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("reasoning_inputs")
    sid_by_item = unique_reference_sids(read_items(sample_dataset.path))
    sids = write_sids_artifact(root / "sids", sid_by_item)
    model_dir = tiny_sid_model(root / "model", levels=3, codes=256)
    train = read_samples(sample_dataset.path, "train").head(6)
    corpus_rows = pd.DataFrame({
        "sample_id": [f"train:{u}:{k}" for k, u in enumerate(train["user_id"])],
        "split": "train", "user_id": train["user_id"], "position": 0, "history": train["history"],
        "history_sids": [[sid_by_item[i] for i in h] for h in train["history"]], "target": train["target"],
        "target_sid": [sid_by_item[t] for t in train["target"]],
        "reasoning": ["I bought " + sid_by_item[h[-1]] + " so I may enjoy tools." for h in train["history"]],
        "narrative": "n", "status": ["ok"] * 5 + ["failed"], "attempts": 1, "error": None,
    })
    from sidreasoner_core.artifacts import open_artifact, write_artifact

    with write_artifact(root / "corpus", kind="corpus") as d:
        corpus_rows.to_parquet(d / "user_reasoning.parquet")
    return {"dataset": sample_dataset, "sids": sids, "model": model_dir, "corpus": open_artifact(root / "corpus"),
            "sid_by_item": sid_by_item}


def test_coldstart_rows_format(inputs):
    from sidreasoner_core.reasoning import coldstart
    from sidreasoner_core.reasoning.config import ColdStartConfig

    recs = coldstart.records(coldstart.read_reasoning(inputs["corpus"].path), inputs["sid_by_item"], ColdStartConfig())
    assert len(recs) == 5  # the failed trace is left out
    corpus = coldstart.read_reasoning(inputs["corpus"].path)
    first = corpus.iloc[0]
    assert recs[0]["completion"][0]["content"] == f"<think>\n{first['reasoning']}\n</think>\n\n{first['target_sid']}"
    assert "Let's think step by step" in recs[0]["prompt"][0]["content"]
    few = coldstart.records(corpus, inputs["sid_by_item"], ColdStartConfig(max_samples=3, max_reasoning_words=3))
    assert len(few) == 3
    for rec in few:  # reasoning cut to 3 words
        text = rec["completion"][0]["content"]
        assert text.startswith("<think>\nI bought <a_") and len(text.split("\n")[1].split()) == 3


def test_coldstart_component(inputs, tmp_path):
    from kfp.dsl import Dataset, Markdown, Metrics, Model

    from components.reasoning import coldstart_op
    from sidreasoner_core.artifacts import open_artifact

    cfg = {"coldstart": {"train": {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                   "learning_rate": 1e-3, "max_length": 256, "logging_steps": 1}}}
    out = tmp_path / "coldstart"
    metrics, curves = Metrics(name="m", uri=str(tmp_path / "m.json")), Markdown(name="c", uri=str(tmp_path / "c.md"))
    coldstart_op.python_func(
        aligned_model=Model(name="a", uri=str(inputs["model"])), dataset=Dataset(name="d", uri=inputs["dataset"].uri),
        sids=Dataset(name="s", uri=inputs["sids"].uri), corpus=Dataset(name="c", uri=inputs["corpus"].uri),
        config_json=json.dumps(cfg), model=Model(name="o", uri=str(out)), metrics=metrics, curves=curves)
    art = open_artifact(out, kind="model")
    assert art.manifest["metrics"]["global_step"] == 2 and art.manifest["metrics"]["samples"] == 5
    assert (art.path / "model" / "config.json").is_file()
    assert json.loads((art.path / "sid_tokens.json").read_text())["levels"] == 3
    assert "loss" in (art.path / "curves.md").read_text() and (tmp_path / "c.md").is_file()
    assert metrics.metadata["global_step"] == 2


def test_own_trace_records_train_the_sid_after_the_models_own_reasoning(inputs):
    from sidreasoner_core.models import load_model
    from sidreasoner_core.reasoning import coldstart
    from sidreasoner_core.reasoning.config import ColdStartConfig
    from sidreasoner_core.training.sft import tokenize_record

    model, tok = load_model(str(inputs["model"]))
    corpus = coldstart.read_reasoning(inputs["corpus"].path)
    cfg = ColdStartConfig(self_traces={"enabled": True, "max_samples": 4, "max_reasoning_tokens": 5, "batch_size": 3})
    recs, closed = coldstart.self_trace_records(model, tok, corpus, inputs["sid_by_item"], cfg)
    assert len(recs) == 4 and 0.0 <= closed <= 1.0  # any row serves, the failed teacher trace's too
    targets = set(corpus["target_sid"])
    for rec in recs:
        response = rec["completion"][0]["content"]
        assert response.startswith(rec["completion_context"]) and rec["completion_context"].startswith("<think>\n")
        sid = response[len(rec["completion_context"]):]
        assert sid in targets
        ids, mask = tokenize_record(rec, tok)
        assert tok.decode([t for t, m in zip(ids, mask) if m]).startswith(sid)  # the loss starts at the SID


def test_direct_rows_answer_the_same_samples_without_reasoning(inputs):
    from sidreasoner_core import prompts
    from sidreasoner_core.models import load_model
    from sidreasoner_core.reasoning import coldstart
    from sidreasoner_core.reasoning.config import ColdStartConfig
    from sidreasoner_core.training.sft import tokenize_record

    model, tok = load_model(str(inputs["model"]))
    corpus = coldstart.read_reasoning(inputs["corpus"].path)
    cfg = ColdStartConfig(self_traces={"enabled": True, "max_samples": 4, "max_reasoning_tokens": 5, "batch_size": 3,
                                       "direct_rows": True})
    recs, _ = coldstart.self_trace_records(model, tok, corpus, inputs["sid_by_item"], cfg)
    own = [r for r in recs if r["task"] == coldstart.SELF_TRACE_TASK]
    direct = [r for r in recs if r["task"] == coldstart.DIRECT_TASK]
    assert len(own) == len(direct) == 4
    for o, d in zip(own, direct):
        # the same sample: its history without the thinking instruction, its target as the whole answer
        assert o["prompt"][0]["content"] == d["prompt"][0]["content"] + " " + prompts.THINKING_INSTRUCTION
        sid = d["completion"][0]["content"]
        assert o["completion"][0]["content"].endswith(sid) and "completion_context" not in d
        ids, mask = tokenize_record(d, tok)  # trained from direct mode's prompt, loss from the SID on
        assert tok.decode([t for t, m in zip(ids, mask) if not m]) == prompts.direct_prompt(tok, d["prompt"][0]["content"])
        assert tok.decode([t for t, m in zip(ids, mask) if m]).startswith(sid)


def test_coldstart_then_own_traces_publishes_one_model(inputs, tmp_path):
    from sidreasoner_core.artifacts import open_artifact
    from sidreasoner_core.reasoning.config import ColdStartConfig
    from sidreasoner_core.reasoning.stage import run_coldstart

    train = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
             "learning_rate": 1e-3, "max_length": 256, "logging_steps": 1}
    cfg = ColdStartConfig(train=train, self_traces={"enabled": True, "max_samples": 4, "max_reasoning_tokens": 5,
                                                    "train": {**train, "max_steps": 3}})
    art = run_coldstart(cfg, str(inputs["model"]), inputs["dataset"], inputs["sids"], inputs["corpus"],
                        str(tmp_path / "cs"))
    m = open_artifact(art.path, kind="model").manifest["metrics"]
    assert m["global_step"] == 2 and m["self_traces_global_step"] == 3 and m["self_traces_samples"] == 4
    assert m["self_traces_direct_rows"] == 0
    assert 0.0 <= m["self_traces_closed_share"] <= 1.0 and "self_traces_train_loss" in m
    assert (art.path / "model" / "config.json").is_file() and not (tmp_path / ".cs.work").exists()
    # the second SFT's losses follow the first's in the stage's curves
    rows = [json.loads(line) for line in (art.path / "curves.jsonl").read_text().splitlines()]
    first = [r["step"] for r in rows if "loss" in r]
    own = [r["step"] for r in rows if "self_traces/loss" in r]
    assert first == [1, 2] and own == [3, 4, 5]
    assert "self_traces/loss" in (art.path / "curves.md").read_text()


def test_grpo_component_logs_curves_and_recall(inputs, tmp_path):
    from kfp.dsl import Dataset, Markdown, Metrics, Model

    from components.reasoning import grpo_op
    from sidreasoner_core.artifacts import open_artifact
    from sidreasoner_core.reasoning.stage import CURVES_MD

    cfg = {"grpo": {"num_generations": 2, "prompts_per_step": 2, "per_device_train_batch_size": 4,
                    "max_completion_length": 8, "max_samples": 8, "eval_samples": 2, "eval_steps": 1,
                    "eval_max_reasoning_tokens": 4, "save_steps": 10}}
    out = tmp_path / "grpo"
    metrics = Metrics(name="m", uri=str(tmp_path / "m.json"))
    grpo_op.python_func(model_in=Model(name="a", uri=str(inputs["model"])),
                        dataset=Dataset(name="d", uri=inputs["dataset"].uri), sids=Dataset(name="s", uri=inputs["sids"].uri),
                        config_json=json.dumps(cfg), model=Model(name="o", uri=str(out)), metrics=metrics,
                        curves=Markdown(name="c", uri=str(tmp_path / "c.md")), max_steps=2,
                        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    art = open_artifact(out, kind="model")
    rows = [json.loads(line) for line in (art.path / "curves.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows}
    assert set(by_step) == {0, 1, 2}
    assert "eval/recall@10" in by_step[0] and "eval/recall@10" in by_step[2]
    assert "reward" in by_step[1] and "sid/valid_share" in by_step[1]
    m = art.manifest["metrics"]
    assert m["train_steps"] == 2 and "reward_first" in m and "eval_recall_at_10_last" in m
    assert "eval/recall@10" in (art.path / CURVES_MD).read_text() and (art.path / "curves.png").is_file()
    assert metrics.metadata["train_steps"] == 2
    assert not (tmp_path / ".grpo.work").exists()  # checkpoints removed once published
    # the curves reached MLflow step by step (names made MLflow-safe)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs(["0"])[0]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "eval/recall_at_10")] == [0, 1, 2]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "reward")] == [1, 2]


def test_grpo_stage_keeps_its_input_when_the_validation_recall_does_not_rise(inputs, tmp_path, monkeypatch):
    """`grpo.publish: best_validation` in the stage: the scripted validation Recall@10 never beats step 0's,
    so the artifact republishes the input model (the weights themselves: tests/test_reasoning_grpo.py)."""
    from sidreasoner_core.reasoning import callbacks
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.stage import run_grpo

    scripted = iter((0.2, 0.2, 0.1))
    monkeypatch.setattr(callbacks, "thinking_recall", lambda *a, **k: {"recall@10": next(scripted)})
    cfg = GRPOStageConfig(publish="best_validation", num_generations=2, prompts_per_step=2,
                          per_device_train_batch_size=4, max_completion_length=8, max_samples=8, eval_samples=2,
                          eval_steps=1, max_steps=2, save_steps=10)
    art = run_grpo(cfg, str(inputs["model"]), inputs["dataset"], inputs["sids"], str(tmp_path / "grpo"))
    assert art.manifest["metrics"]["published_step"] == 0 and art.manifest["metrics"]["train_steps"] == 2
    assert (art.path / "model" / "model.safetensors").read_bytes() == (inputs["model"] / "model.safetensors").read_bytes()
    assert not (tmp_path / ".grpo.work").exists()


class PodKilled(Exception):
    pass


def test_retried_grpo_pod_publishes_the_best_policy_kept_before_the_kill(inputs, tmp_path, monkeypatch, s3_bucket):
    """A GRPO pod with `publish: best_validation` dies after checkpoint-2; the retry on fresh scratch gets
    back, from the step state on S3, the curves (steps 0-2) and the policy kept at step 1, so it publishes
    step 1's weights, as the uninterrupted run would. Without them it would publish its last step."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from sidreasoner_core import storage
    from sidreasoner_core.reasoning import callbacks
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.reasoning.stage import run_grpo
    from sidreasoner_core.step_state import STATE_URI_ENV, step_state_uri

    monkeypatch.setenv(STATE_URI_ENV, f"s3://{s3_bucket}/state")
    monkeypatch.setenv("SIDREASONER_RUN_ID", "run-grpo-best")
    measured = iter([0, 1, 2, "kill", 3, 4])  # the steps measured, in order: pod 1, then the retry from step 2
    scripted = {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.2, 4: 0.2}
    seen: dict[int, float] = {}  # step -> the weights the measurement saw

    def scripted_recall(model, *args, **kwargs):
        step = next(measured)
        if step == "kill":  # the pod dies during step 3, after checkpoint-2 was stored
            raise PodKilled
        with torch.no_grad():  # the random model earns no reward, so GRPO leaves it be: mark each step's policy
            model.get_input_embeddings().weight[0, 0] += step + 1
        seen[step] = float(sum(t.detach().double().sum() for t in model.state_dict().values()))
        return {"recall@10": scripted[step]}

    monkeypatch.setattr(callbacks, "thinking_recall", scripted_recall)
    cfg = GRPOStageConfig(publish="best_validation", num_generations=2, prompts_per_step=2,
                          per_device_train_batch_size=4, max_completion_length=8, max_samples=8, eval_samples=2,
                          eval_steps=1, max_steps=4, save_steps=2)
    state = step_state_uri("grpo", "checkpoints")
    with pytest.raises(PodKilled):
        run_grpo(cfg, str(inputs["model"]), inputs["dataset"], inputs["sids"], str(tmp_path / "pod1" / "grpo"))
    assert {"checkpoint-2.done", "best-1.done"} <= {k.split("/")[0] for k in storage.list_keys(state)}
    shutil.rmtree(tmp_path / "pod1")  # the retried pod gets fresh scratch

    art = run_grpo(cfg, str(inputs["model"]), inputs["dataset"], inputs["sids"], str(tmp_path / "pod2" / "grpo"))
    m = art.manifest["metrics"]
    assert (m["resumed_from_step"], m["train_steps"], m["published_step"]) == (2, 4, 1)
    published = AutoModelForCausalLM.from_pretrained(art.path / "model").state_dict()  # tied weights as `seen` had them
    assert float(sum(t.double().sum() for t in published.values())) == pytest.approx(seen[1], abs=1e-6)
    assert len({round(w, 3) for w in seen.values()}) == 5  # every measured policy differs
    rows = [json.loads(line) for line in (art.path / "curves.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows if "eval/recall@10" in r}) == [0, 1, 2, 3, 4]  # the report keeps them
    assert storage.list_keys(state) == []  # published: the step state is dropped


def test_published_policy_prefers_the_earlier_step_and_falls_back_to_the_last(tmp_path):
    from sidreasoner_core.reasoning.stage import published_policy

    cands = {0: tmp_path / "in", 40: tmp_path / "best-40", 162: tmp_path / "final"}
    rows = [{"step": 0, "eval/recall@10": 0.10}, {"step": 40, "eval/recall@10": 0.10}, {"step": 80, "eval/recall@10": 0.2},
            {"step": 162, "eval/recall@10": 0.09}]
    assert published_policy(rows, cands) == (0, tmp_path / "in")  # step 80's policy was not kept: not a candidate
    assert published_policy([{"step": 3, "reward": 1.0}], cands) == (162, tmp_path / "final")


def test_cli_bad_sids_is_clear(inputs, tmp_path):
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app

    res = CliRunner().invoke(app, ["grpo", "--model", str(inputs["model"]), "--dataset", inputs["dataset"].uri,
                                   "--sids", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "nope" in res.output and "does not exist" in res.output


def test_curve_log_survives_a_cut_line_and_merges_steps(tmp_path):
    from sidreasoner_core.reasoning.callbacks import CurveLog
    from sidreasoner_core.reasoning.stage import curves_markdown

    seen = []
    curves = CurveLog(tmp_path / "c.jsonl", forward=lambda values, step: seen.append(step))
    curves.write(1, {"reward": 0.1, "note": "text is dropped", "flag": True})
    curves.write(1, {"eval/recall@10": 0.5})
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write('{"step": 2, "rew')  # a kill mid-write
    curves.write(2, {"reward": 0.3})
    assert curves.rows() == [{"step": 1, "reward": 0.1, "eval/recall@10": 0.5}, {"step": 2, "reward": 0.3}]
    assert seen == [1, 1, 2]
    md = curves_markdown(curves.rows(), ("reward", "eval/recall@10", "kl"), "GRPO")
    assert "| step | reward | eval/recall@10 |" in md and "| 2 | 0.3 |  |" in md


def test_shorten_keeps_whole_sentences():
    from sidreasoner_core.prompts import shorten

    text = "One two three. Four five six seven. Eight."
    assert shorten(text, None) == text and shorten(text, 100) == text
    assert shorten(text, 7) == "One two three. Four five six seven."
    assert shorten(text, 5) == "One two three."
    assert shorten(text, 2) == "One two"


def test_disabled_stages_pass_the_model_through(inputs, tmp_path):
    """The ablation switch: cold-start and GRPO off republish the input model unchanged."""
    from sidreasoner_core.reasoning.config import ColdStartConfig, GRPOStageConfig
    from sidreasoner_core.reasoning.stage import run_coldstart, run_grpo

    cold = run_coldstart(ColdStartConfig(enabled=False), str(inputs["model"]), inputs["dataset"], inputs["sids"],
                         inputs["corpus"], str(tmp_path / "cold"))
    grpo = run_grpo(GRPOStageConfig(enabled=False), cold, inputs["dataset"], inputs["sids"], str(tmp_path / "grpo"))
    for art in (cold, grpo):
        assert art.manifest["skipped"] is True and art.manifest["metrics"] == {"skipped": 1.0}
        assert (art.path / "model" / "model.safetensors").read_bytes() == \
            (inputs["model"] / "model.safetensors").read_bytes()
    assert json.loads((grpo.path / "sid_tokens.json").read_text())["levels"] == 3
