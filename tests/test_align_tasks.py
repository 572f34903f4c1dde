"""Alignment task builders on the shipped sample, the mix, input errors, GSM8K parsing."""
from __future__ import annotations

import json

import pytest

from align_helpers import corpus_artifact, reference_sids_artifact
from conftest import GSM8K_DIR
from sidreasoner_core import prompts
from sidreasoner_core import sid as sidlib
from sidreasoner_core.align import gsm8k
from sidreasoner_core.align.config import TASKS, AlignConfig
from sidreasoner_core.training.sft import tokenize_record
from sidreasoner_core.align.stage import build_inputs
from sidreasoner_core.sid import read_sid_table
from sidreasoner_core.align.tasks import TaskDataError, mix, read_corpus, read_jsonl, task_pools
from sidreasoner_core.config import ConfigError


@pytest.fixture(scope="module")
def arts(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("align_tasks")
    sids = reference_sids_artifact(sample_dataset, root / "sids")
    corpus = corpus_artifact(sample_dataset, sids, root / "corpus")
    return sample_dataset, sids, corpus


@pytest.fixture(scope="module")
def pools(arts):
    dataset, sids, corpus = arts
    table = read_sid_table(sids.path)
    assert (table.levels, table.codes_per_level) == (3, 256)
    sid_by_item = table.sid_by_item
    inputs = build_inputs(AlignConfig(), dataset.path, sid_by_item, corpus.path)
    return task_pools(inputs, max_history=10, eval_items=20), sid_by_item


def test_every_task_template_renders_from_the_sample(pools):
    from sidreasoner_core.models import TINY, add_sid_tokens, load_model

    pools, sid_by_item = pools
    assert set(pools) == set(TASKS)
    model, tok = load_model(TINY)
    add_sid_tokens(tok, model, sidlib.vocabulary(3, 256))
    sids = set(sid_by_item.values())
    for s in sids:  # every catalogue SID is exactly its 3 tokens, and decodes back
        enc = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(enc) == sidlib.tokens_of(s) and tok.decode(enc) == s
    for task, (train, evals) in pools.items():
        assert train and evals, task
        for rec in train[:20] + evals[:5]:
            assert rec["task"] == task
            ids, mask = tokenize_record(rec, tok)
            assert 0 < sum(mask) <= len(ids)
            if task.endswith("_to_sid"):
                answer = rec["completion"][0]["content"]
                assert answer in sids and sum(mask) == 3 + 2  # SID tokens + end of turn + newline
            if "text" in rec:
                assert sidlib.find_sids(rec["text"]) and "{" not in rec["text"]
            else:
                user = rec["prompt"][0]["content"]
                assert "{" not in user and "}" not in user, (task, user)  # no unfilled placeholder
    # task 5 uses the shared prompt; title histories name the category
    rec = pools["sid_history_to_sid"][0][0]
    history = sidlib.find_sids(rec["prompt"][0]["content"])
    assert rec["prompt"][0]["content"] == prompts.sid_history_prompt(history)
    assert "bought the following Industrial and Scientific items" in pools["title_history_to_sid"][0][0]["prompt"][0]["content"]
    assert pools["gsm8k"][0][0]["completion"][0]["content"].splitlines()[-1].startswith("#### ")
    assert "<<" not in pools["gsm8k"][0][0]["completion"][0]["content"]


def test_sequence_tasks_use_the_splits(arts, pools):
    from sidreasoner_core.dataset import read_samples

    pools, _ = pools
    n_train = len(read_samples(arts[0].path, "train"))
    n_valid = len(read_samples(arts[0].path, "valid"))
    assert len(pools["sid_history_to_sid"][0]) == n_train
    assert len(pools["sid_history_to_sid"][1]) == n_valid


def test_mix_applies_ratios_caps_and_eval_tasks(pools):
    pools, _ = pools
    ratios = {"title_to_sid": 0.5, "sid_to_title": 2.0, "gsm8k": 0.0}
    train, evals, counts = mix(pools, ratios, eval_max_per_task=3, eval_tasks=["sid_history_to_sid"])
    n_items = len(pools["title_to_sid"][0])
    assert counts["n_train_title_to_sid"] == round(0.5 * n_items)
    assert counts["n_train_sid_to_title"] == 2 * n_items
    assert "n_train_gsm8k" not in counts and not any(r["task"] == "gsm8k" for r in train)
    assert counts["n_train_sid_history_to_sid"] == len(pools["sid_history_to_sid"][0])  # missing ratio = 1
    assert {r["task"] for r in evals} == {"sid_history_to_sid"} and len(evals) == 3
    capped, _, c2 = mix(pools, {}, max_per_task=5, seed=1)
    assert all(v == 5 for k, v in c2.items() if k.startswith("n_train_"))
    assert mix(pools, {}, max_per_task=5, seed=1)[0] == capped  # deterministic


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="task_ratios.*unknown task 'title2sid'"):
        AlignConfig.build({"task_ratios": {"title2sid": 1.0}})
    with pytest.raises(ConfigError, match="train.learning_rate"):
        AlignConfig.build({"train": {"learning_rate": -1}})
    with pytest.raises(ConfigError, match="eval_tasks"):
        AlignConfig.build({"eval_tasks": ["nope"]})


def test_bad_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{oops\n")
    with pytest.raises(TaskDataError, match=r"g.jsonl:2: not valid JSON"):
        read_jsonl(p)
    p.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(TaskDataError, match=r"g.jsonl:1: field 'answer'"):
        read_jsonl(p)
    assert len(read_jsonl(GSM8K_DIR / "gsm8k_test.jsonl")) == 1319


def test_corpus_keeps_only_ok_rows(arts, tmp_path):
    paragraphs, narratives = read_corpus(arts[2].path)
    assert len(paragraphs) == 6 and len(narratives) == 6
    assert read_corpus(None) == ([], [])
    import pandas as pd

    pd.DataFrame({"text": ["x"]}).to_parquet(tmp_path / "item_texts.parquet")
    with pytest.raises(TaskDataError, match="item_texts.parquet: column 'paragraph' missing"):
        read_corpus(tmp_path)


@pytest.mark.parametrize("text,value", [
    ("so 3 + 4 = 7\n#### 7", 7.0), ("#### 1,234", 1234.0), ("The answer is 18.", 18.0),
    ("she pays $-5 then 12.50 dollars", 12.5), ("no digits", None)])
def test_gsm8k_answer_extraction(text, value):
    assert gsm8k.extract_answer(text) == value


def test_gsm8k_evaluate_counts_correct_answers():
    """A stub model that always answers '#### 72' scores exactly the rows whose gold is 72."""
    import torch

    from sidreasoner_core.models import TINY, load_model

    _, tok = load_model(TINY)
    answer = tok("#### 72<|im_end|>", add_special_tokens=False)["input_ids"]

    class Stub(torch.nn.Module):
        device = torch.device("cpu")

        def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
            tail = torch.tensor(answer[:max_new_tokens]).repeat(input_ids.shape[0], 1)
            return torch.cat([input_ids, tail], dim=1)

    rows = [{"question": "a?", "answer": "x\n#### 72"}, {"question": "b?", "answer": "#### 5"},
            {"question": "c?", "answer": "#### 72"}]
    res = gsm8k.evaluate(Stub(), tok, rows, max_new_tokens=16, batch_size=2)
    assert (res["correct"], res["n"]) == (2, 3) and res["accuracy"] == pytest.approx(2 / 3)
    assert tok.padding_side == "right" or tok.padding_side == "left"


@pytest.mark.parametrize("ablation,on", [("S1", 6), ("S2", 9), ("S3", 10)])
def test_ablation_switches_tasks_off(ablation, on):
    from sidreasoner_core.align.config import TASKS, AlignConfig

    ratios = AlignConfig(ablation=ablation, task_ratios={"sid_history_to_sid": 3.0}).effective_ratios()
    assert [t for t in TASKS if ratios[t] > 0] == list(TASKS[:on])
    assert ratios["sid_history_to_sid"] == 3.0


def test_user_reasoning_rows_reason_then_answer_on_train_samples_only(arts, pools):
    """Task 8 as reason-then-SID chats (paper §3.2.3): the thinking prompt of the history, the teacher's
    trace (cut to whole sentences) inside <think>, then the target's SID; never a held-out target."""
    from sidreasoner_core.corpus import read_user_reasoning

    dataset, sids, corpus = arts
    pools_, sid_by_item = pools
    traces = read_user_reasoning(corpus.path)
    train_traces = traces[traces["split"] == "train"]
    rows = pools_["user_reasoning"][0]
    assert len(rows) == len(train_traces) > 0
    for rec, (_, t) in zip(rows, train_traces.iterrows()):
        history = [sid_by_item[i] for i in list(t["history"])[-10:]]
        assert rec["prompt"][0]["content"] == prompts.sid_history_prompt(history, thinking=True)
        assert rec["completion"][0]["content"] == prompts.thinking_response(t["reasoning"], sid_by_item[t["target"]])
    short = task_pools(build_inputs(AlignConfig(), dataset.path, sid_by_item, corpus.path), 10, 20,
                       reasoning_max_words=8)["user_reasoning"][0]
    reasoning = [r["completion"][0]["content"].split("</think>")[0].removeprefix("<think>") for r in short]
    assert all(len(r.split()) <= 8 for r in reasoning) and any(len(r.split()) > 8 for r in train_traces["reasoning"])
