"""The OpenAI-compatible teacher path against a real loopback HTTP server with scripted faults."""
from __future__ import annotations

import json
import logging

import pytest
from conftest_enrich import (SECRET, ChatServer, Reply, assert_every_record_accounted, completion,  # noqa: F401
                             enrich_inputs, item_title, leaky_answer, prompt_key, smart_answer, target_title, task_of)

from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import run

RETRY_AFTER_S = 0.3
TIMEOUT_S = 0.6
FAULTS = ["rate_limit", "server_error", "stall", "malformed", "leak", "ok", "ok"]


def fault_of(messages) -> str:
    return FAULTS[int(prompt_key(messages), 16) % len(FAULTS)]


class Script:
    """First request of each prompt gets a fault chosen by the prompt's hash; the records in
    `poisoned` always get rule-breaking answers (they must end failed and reported)."""

    def __init__(self, poisoned_titles: set[str]):
        self.poisoned = poisoned_titles

    def __call__(self, messages, n):
        task = task_of(messages)
        title = target_title(messages) if task == "reasoning" else item_title(messages) if task != "narrative" else None
        if title in self.poisoned and task in ("reasoning", "integration"):
            return Reply(body=completion(leaky_answer(messages)))
        # faults hit the first request of each base prompt; retried prompts (with a reason) are answered well
        fault = fault_of(messages) if n == 1 and len(messages) == 2 else "ok"
        if fault == "rate_limit":
            return Reply(status=429, body={"error": {"message": "slow down", "type": "rate_limit"}},
                         headers={"Retry-After": str(RETRY_AFTER_S)})
        if fault == "server_error":
            return Reply(status=500, body={"error": {"message": "boom"}})
        if fault == "stall":
            return Reply(body=completion(smart_answer(messages)), stall_s=TIMEOUT_S * 2.5)
        if fault == "malformed":
            return Reply(raw=b'{"id": "x", "choices": [ {"message": ')
        if fault == "leak":
            return Reply(body=completion(leaky_answer(messages)))
        return Reply(body=completion(smart_answer(messages)))


def _config(server, **kw) -> EnrichConfig:
    base = dict(teacher="openai", base_url=server.url, model="teacher-test", api_key_env="ENRICH_TEST_KEY",
                concurrency=8, request_timeout_s=TIMEOUT_S, max_retries=4, backoff_base_s=0.02, backoff_max_s=2.0,
                max_attempts=3, max_items=14, max_user_samples=10, temperature=0.0)
    base.update(kw)
    return EnrichConfig(**base)


def test_faults_every_record_valid_or_reported(enrich_inputs, tmp_path, monkeypatch, caplog, capfd):
    from sidreasoner_core.dataset import read_items

    dataset, sids = enrich_inputs
    monkeypatch.setenv("ENRICH_TEST_KEY", SECRET)
    items = read_items(dataset.path)
    poisoned = {items["title"].iloc[3]}  # item 3's paragraph always names its title
    caplog.set_level(logging.DEBUG)  # the SDK and httpx log at DEBUG: the key must not be there either
    with ChatServer(Script(poisoned)) as server:
        cfg = _config(server, prices={"teacher-test": {"input_per_1m": 1.0, "output_per_1m": 2.0}})
        art = run(cfg, dataset, sids, tmp_path / "corpus")
        events = dict(server.events)
        answered = dict(server.answered)
        auth = set(server.auth_headers)
    it, us, failed = assert_every_record_accounted(art, 14, 10)
    # the poisoned item failed after max_attempts with the reason; the scripted faults all recovered
    row = it.set_index("item_id").loc[items["item_id"].iloc[3]]
    assert row.status == "failed" and "title" in row.error and row.attempts == 1 + 3
    assert {(f["kind"], f["id"]) for f in failed} == {("item", items["item_id"].iloc[3])}
    assert len(failed[0]["rejections"]) == 3
    assert (it.status == "ok").sum() == 13 and (us.status == "ok").all()
    usage = json.loads((art.path / "usage.json").read_text())
    for kind in ("rate_limited", "http_500", "timeout", "malformed"):
        assert usage["errors"].get(kind, 0) >= 1, (kind, usage["errors"])
    assert usage["responses"] == len(art.path.joinpath("cache", "responses.jsonl").read_text().splitlines())
    assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6)
    # Retry-After honoured: the retry of a 429'd prompt came no sooner than the server asked
    gaps = [evs[1][0] - evs[0][0] for evs in events.values() if evs[0][1] == 429 and len(evs) > 1]
    assert gaps and min(gaps) >= RETRY_AFTER_S
    # a leaked answer was retried with the reason appended (a new prompt that carries the reason)
    cache = [json.loads(line) for line in (art.path / "cache" / "responses.jsonl").read_text().splitlines()]
    assert len(cache) == usage["responses"] == sum(answered.values())
    assert max(answered.values()) == 1  # no answer paid for twice (identical prompts in flight are coalesced)
    # the key reached the server, and nothing else
    assert auth == {f"Bearer {SECRET}"}
    for p in art.path.rglob("*"):
        if p.is_file():
            assert SECRET not in p.read_text(errors="ignore"), p
    out, err = capfd.readouterr()
    assert SECRET not in caplog.text and SECRET not in out and SECRET not in err
    assert "ENRICH_TEST_KEY" in (art.path / "manifest.json").read_text()  # the env var's name, not its value


def test_fatal_auth_error_aborts_without_publishing(enrich_inputs, tmp_path, monkeypatch):
    from sidreasoner_core.enrich.client import TeacherError

    dataset, sids = enrich_inputs
    monkeypatch.setenv("ENRICH_TEST_KEY", SECRET)
    with ChatServer(lambda m, n: Reply(status=401, body={"error": {"message": "bad key"}})) as server:
        with pytest.raises(TeacherError, match="HTTP 401") as exc:
            run(_config(server, max_items=2, user_centric=False), dataset, sids, tmp_path / "corpus")
    assert SECRET not in str(exc.value)
    assert not (tmp_path / "corpus").exists()


def test_transport_failures_are_reported_not_dropped(enrich_inputs, tmp_path, monkeypatch):
    dataset, sids = enrich_inputs
    monkeypatch.setenv("ENRICH_TEST_KEY", SECRET)
    with ChatServer(lambda m, n: Reply(status=503, body={"error": {"message": "down"}})) as server:
        art = run(_config(server, max_items=3, max_user_samples=2, max_retries=2), dataset, sids, tmp_path / "c")
    it, us, failed = assert_every_record_accounted(art, 3, 2)
    assert len(failed) == 5 and all("HTTP 503" in f["error"] for f in failed)
    # 1 try + 2 retries per distinct prompt, then reported (items 7 and 8 of the sample have identical
    # metadata: their identical prompts share one request)
    assert set(server.seen.values()) == {3} and len(server.seen) == 4
