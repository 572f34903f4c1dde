"""Offline teacher on the shipped sample, validation rules, config/input errors, the component."""
from __future__ import annotations

import json

import pytest
from conftest_enrich import assert_every_record_accounted, build_sids_artifact, enrich_inputs  # noqa: F401

from sidreasoner_core.enrich import validate
from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import run
from sidreasoner_core.sid import SIDError


@pytest.fixture(scope="module")
def offline_corpus(enrich_inputs, tmp_path_factory):
    dataset, sids = enrich_inputs
    return run(EnrichConfig(), dataset, sids, tmp_path_factory.mktemp("off") / "corpus")


def test_offline_teacher_all_records_valid(offline_corpus, enrich_inputs):
    from sidreasoner_core.dataset import read_items, read_samples

    dataset, _ = enrich_inputs
    items = read_items(dataset.path).set_index("item_id")
    n_train = int((read_samples(dataset.path)["split"] == "train").sum())
    it, us, failed = assert_every_record_accounted(offline_corpus, len(items), n_train)
    assert failed == [] and (it.status == "ok").all() and (us.status == "ok").all()
    assert set(us["split"]) == {"train"}  # user-centric generation on training samples only
    for r in it.itertuples():
        _, reasons = validate.check_item_paragraph(r.paragraph, r.sid, items.loc[r.item_id, "title"], 10)
        assert reasons == [], (r.item_id, reasons)
        assert set(json.loads(r.analysis)) >= set(validate.ANALYSIS_KEYS)
    sid_of = dict(zip(it.item_id, it.sid))
    for r in us.itertuples():
        titles = [items.loc[h, "title"] for h in r.history]
        tt = items.loc[r.target, "title"]
        for text, full in ((r.reasoning, False), (r.narrative, True)):
            assert validate.check_user_text(text, r.history_sids, titles, r.target_sid, tt, full)[1] == []
        assert r.history_sids == [sid_of[h] for h in r.history]
        if r.target_sid not in r.history_sids:
            assert r.target_sid not in r.reasoning
        assert "may enjoy" in r.reasoning[-300:]  # ends open, on what the user may enjoy
    usage = json.loads((offline_corpus.path / "usage.json").read_text())
    assert usage["requests"] == 0 and usage["teacher"] == "offline"
    assert json.loads((offline_corpus.path / "prompts.json").read_text())["version"] == "v1"


def test_reasoning_feeds_the_coldstart_format(offline_corpus):
    """The reasoning column becomes `<think>\\n{reasoning}\\n</think>\\n\\n{SID}` downstream."""
    from sidreasoner_core.corpus import read_user_reasoning

    us = read_user_reasoning(offline_corpus.path)
    assert {"history", "target", "reasoning", "status", "user_id"} <= set(us.columns)
    assert not us["reasoning"].str.contains("<think>|</think>").any()


@pytest.mark.parametrize("text,reason", [
    ("<a_1><b_2><c_3> is good. " * 12, None),
    ("- <a_1><b_2><c_3> is good.\n" * 12, "bullet"),
    ("The Super Drill 3000 is good. " * 12, "Semantic ID"),
    ("<a_1><b_2><c_3> aka the super drill 3000 is good. " * 12, "title"),
    ("<a_1><b_2><c_3> is good. " * 3, "sentences"),
    ("<a_1><b_2><c_3> beats <a_1><b_2><c_4> in every way. " * 12, "not this item"),
])
def test_item_paragraph_rules(text, reason):
    _, reasons = validate.check_item_paragraph(text, "<a_1><b_2><c_3>", "Super Drill 3000", 10)
    assert (reasons == []) if reason is None else any(reason in r for r in reasons), reasons


def test_user_text_rules():
    hist, titles, tsid, ttitle = ["<a_1><b_1><c_1>", "<a_2><b_2><c_2>"], ["Red Hammer Pro", "Blue Saw Max"], \
        "<a_9><b_9><c_9>", "Green Drill Ultra"
    base = "I notice the user bought <a_1><b_1><c_1> and then <a_2><b_2><c_2>, so hand tools matter a lot here."
    check = validate.check_user_text
    assert check(base + " The user may enjoy more tools.", hist, titles, tsid, ttitle, True)[1] == []
    assert any("Semantic ID" in r for r in check(base + " Next: <a_9><b_9><c_9>.", hist, titles, tsid, ttitle, False)[1])
    assert any("title" in r for r in check(base + " Likely the green drill ultra.", hist, titles, tsid, ttitle, False)[1])
    assert any("titles" in r for r in check(base + " Like the Red Hammer Pro.", hist, titles, tsid, ttitle, False)[1])
    assert any("recite" in r for r in check(base.replace("<a_2><b_2><c_2>", "it"), hist, titles, tsid, ttitle, True)[1])
    assert any("not in the history" in r for r in check(base + " Or <a_5><b_5><c_5>.", hist, titles, tsid, ttitle, False)[1])
    # a repeat purchase: the target's SID is also a history SID, so naming it is reciting the history
    assert check(base, hist, titles, hist[1], titles[1], False)[1] == []
    assert validate.clean("<think>hmm</think>\n\nanswer") == "answer"
    assert validate.parse_analysis('```json\n{"description": "d", "use_cases": ["u"], "audience": "a", '
                                   '"features": ["f"], "keywords": ["k"]}\n```')[1] == []
    assert "not valid JSON" in validate.parse_analysis("{'description': 1}")[1][0]


def test_bad_config_and_inputs_name_the_field(enrich_inputs, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidreasoner_core.artifacts import write_artifact
    from sidreasoner_core.config import ConfigError
    from sidreasoner_core.enrich.client import TeacherError
    from sidreasoner_core.enrich.inputs import EnrichError

    with pytest.raises(ConfigError, match="field 'teacher'"):
        EnrichConfig.build({"teacher": "gpt5"})
    with pytest.raises(ConfigError, match="field 'concurrency'"):
        EnrichConfig.build({"concurrency": 0})
    dataset, sids = enrich_inputs
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TeacherError, match="NO_SUCH_KEY_VAR is not set"):
        run(EnrichConfig(teacher="openai", api_key_env="NO_SUCH_KEY_VAR", base_url="http://127.0.0.1:9/v1",
                         max_items=1, user_centric=False), dataset, sids, tmp_path / "c1")
    with write_artifact(tmp_path / "badsids", kind="sids") as d:
        pq.write_table(pa.table({"item_id": ["7"], "sid": ["<a_1><c_2>"]}), d / "sids.parquet")
    with pytest.raises(SIDError, match=r"sids.parquet: row 0 \(item '7'\): field 'sid'"):
        run(EnrichConfig(), dataset, tmp_path / "badsids", tmp_path / "c2")
    with write_artifact(tmp_path / "fewsids", kind="sids") as d:
        pq.write_table(pa.table({"item_id": ["7"], "sid": ["<a_1><b_2><c_3>"]}), d / "sids.parquet")
    with pytest.raises(EnrichError, match="have no SID"):
        run(EnrichConfig(), dataset, tmp_path / "fewsids", tmp_path / "c3")
    assert not (tmp_path / "c3").exists()  # nothing published on failure


def test_component_python_func(enrich_inputs, tmp_path):
    from kfp.dsl import Dataset, Metrics

    from components.enrich import enrich_op
    from sidreasoner_core.artifacts import open_artifact

    dataset, sids = enrich_inputs
    corpus = Dataset(name="corpus", uri=str(tmp_path / "corpus"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    cfg = json.dumps({"enrich": {"max_items": 20, "max_user_samples": 10}})
    enrich_op.python_func(dataset=Dataset(name="d", uri=str(dataset.path)), sids=Dataset(name="s", uri=str(sids.path)),
                          config_json=cfg, corpus=corpus, metrics=metrics)
    art = open_artifact(corpus.path, kind="corpus")
    assert art.manifest["stats"]["items_ok"] == 20 and art.manifest["stats"]["users_ok"] == 10
    assert metrics.metadata["items_ok"] == 20 and metrics.metadata["users_failed"] == 0
    assert [p["kind"] for p in art.manifest["parents"]] == ["dataset", "sids"]


def test_retry_after_and_backoff():
    import email.utils
    import time

    from sidreasoner_core.enrich.cache import ResponseCache
    from sidreasoner_core.enrich.client import TeacherClient, retry_after_s

    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 25 <= retry_after_s({"retry-after": email.utils.formatdate(time.time() + 30, usegmt=True)}) <= 31
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    client = TeacherClient(EnrichConfig(teacher="openai", backoff_base_s=1.0, backoff_max_s=8.0), ResponseCache.__new__(ResponseCache))
    waits = [client.backoff_s(n, None) for n in range(6)]
    assert all(0.5 * min(8, 2 ** n) <= w <= min(8, 2 ** n) for n, w in enumerate(waits))  # exponential, jittered, capped
    assert len({round(client.backoff_s(3, None), 6) for _ in range(5)}) > 1
    assert 3.0 <= client.backoff_s(0, 3.0) <= 3.1 and client.backoff_s(0, 100.0) <= 8.1  # Retry-After, capped


def test_cache_survives_a_torn_line(tmp_path):
    from sidreasoner_core.enrich.cache import ResponseCache, cache_key

    cache = ResponseCache(tmp_path / "c")
    k1 = cache_key("m", [{"role": "user", "content": "a"}], {"temperature": 0})
    assert k1 != cache_key("m", [{"role": "user", "content": "a"}], {"temperature": 0.5})
    assert k1 != cache_key("m2", [{"role": "user", "content": "a"}], {"temperature": 0})
    cache.put(k1, "answer", "stop", {"prompt_tokens": 3})
    cache.close()
    with open(tmp_path / "c" / "responses.jsonl", "a") as f:
        f.write('{"key": "torn", "cont')  # a kill mid-write
    again = ResponseCache(tmp_path / "c")
    assert again.get(k1)["content"] == "answer" and again.get("torn") is None
    again.put("k2", "second", "stop", {})
    again.close()
    assert ResponseCache(tmp_path / "c").get("k2")["content"] == "second"


def test_ray_vllm_engine_needs_vllm(monkeypatch):
    pytest.importorskip("ray.data.llm")
    import importlib.util

    from sidreasoner_core.enrich.ray_path import _send

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RuntimeError, match="needs vllm"):
        _send({"k": {"messages": []}}, EnrichConfig(backend="ray", ray_engine="vllm"))


def test_offline_rationale_keeps_its_signal_in_a_short_budget(offline_corpus):
    """Interests, their shift and the expected next item come first: a 20-word cut keeps them."""
    from sidreasoner_core.corpus import read_user_reasoning
    from sidreasoner_core.prompts import shorten

    us = read_user_reasoning(offline_corpus.path)
    cut = [shorten(r, 20) for r in us["reasoning"]]
    assert sum("Next: a " in c for c in cut) / len(cut) >= 0.95
    assert all(c.startswith(("From ", "Steady on ")) for c in cut)
    assert not any("<a_" in c for c in cut)       # the SID anchor comes last and is cut first


def test_corpus_reports_how_identifying_its_traces_are(offline_corpus, enrich_inputs, tmp_path):
    from sidreasoner_core.enrich.leakage import identifying_share
    from sidreasoner_core.enrich.prompts import ItemInfo

    stats = offline_corpus.manifest["stats"]
    assert 0 < stats["reasoning_identifying"] <= stats["reasoning_states_target_type"] == 1.0  # hint on
    dataset, sids = enrich_inputs
    blind = run(EnrichConfig(offline_target_hint=False), dataset, sids, tmp_path / "blind").manifest["stats"]
    assert blind["reasoning_identifying"] < stats["reasoning_identifying"] / 4    # without the target: little leak
    # the figure itself: a unique (type, brand) pair stated = identifying; a shared one or no brand match = not
    a = ItemInfo(item_id="a", sid="<a_1>", title="Hex bolt M6, pack", brand="Acme", category="", description="")
    b = ItemInfo(item_id="b", sid="<a_2>", title="Hex bolt M6, box", brand="Bolty", category="", description="")
    c = ItemInfo(item_id="c", sid="<a_3>", title="Hex bolt M6, tin", brand="Bolty", category="", description="")
    share = identifying_share([("next: a hex bolt by Acme.", a), ("next: a hex bolt by Bolty.", b),
                               ("next: a hex bolt.", a), ("next: gloves.", a)], [a, b, c])
    assert share == {"n": 4.0, "states_target_type": 0.75, "identifying": 0.25}


def test_offline_narrative_is_the_same_under_any_hash_seed():
    """Words shared across the history are counted in the order each item lists them, not in set
    order: the corpus (and so `make run`'s figures) must not depend on the process's hash seed."""
    import os
    import subprocess
    import sys

    code = ("from sidreasoner_core.enrich.offline import user_narrative\n"
            "from sidreasoner_core.enrich.prompts import ItemInfo\n"
            "d = 'silicone sealant for kitchen bath and rubber seals, a sealant that is silicone based'\n"
            "h = [ItemInfo(str(i), f'<a_{i}>', t, 'DAP', '', d) for i, t in "
            "enumerate(['Kitchen Bath Sealant', 'Silicone Rubber Sealant Kitchen', 'Bath Silicone Seal'])]\n"
            "print(user_narrative(h, None))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1 and "recur" in next(iter(outs))
