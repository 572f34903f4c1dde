"""The Ray Data path (ray.data.llm HTTP request processor) on a local Ray against the loopback server."""
from __future__ import annotations

import json

import pytest
from conftest_enrich import (SECRET, ChatServer, Reply, assert_every_record_accounted, completion, enrich_inputs,  # noqa: F401
                             leaky_answer, smart_answer, task_of)

pytest.importorskip("ray.data.llm")

from sidreasoner_core.enrich.config import EnrichConfig  # noqa: E402
from sidreasoner_core.enrich.stage import run  # noqa: E402


@pytest.mark.slow  # starting a local Ray and its actor pools takes ~40 s on 2 cores
def test_ray_backend_rounds_validate_and_cache(enrich_inputs, tmp_path, monkeypatch):
    import ray

    dataset, sids = enrich_inputs
    monkeypatch.setenv("ENRICH_TEST_KEY", SECRET)

    def script(messages, n):
        if len(messages) == 2 and task_of(messages) == "integration":  # first try leaks the title
            return Reply(body=completion(leaky_answer(messages)))
        if n == 1 and task_of(messages) == "reasoning":  # a torn body, then a 500, then a good answer
            return Reply(raw=b'{"choices": [')
        if n == 2 and task_of(messages) == "reasoning":
            return Reply(status=500, body={"error": {"message": "boom"}})
        return Reply(body=completion(smart_answer(messages)))

    cfg = dict(teacher="openai", backend="ray", model="teacher-test", api_key_env="ENRICH_TEST_KEY",
               max_items=4, max_user_samples=3, ray_batch_size=4, backoff_base_s=0.05, max_retries=2)
    try:
        with ChatServer(script) as server:
            art = run(EnrichConfig(base_url=server.url, **cfg), dataset, sids, tmp_path / "corpus")
            it, us, failed = assert_every_record_accounted(art, 4, 3)
            assert failed == [] and (it.attempts == 3).all()  # analysis + rejected + accepted integration
            assert server.auth_headers == {f"Bearer {SECRET}"}  # the workers read the key from their env
            assert max(server.answered.values()) == 1
            usage = json.loads((art.path / "usage.json").read_text())
            assert usage["responses"] == sum(server.answered.values())
            assert usage["errors"]["malformed"] >= 2  # the torn body and the 500 came back as rows, retried
            before = server.requests
            art2 = run(EnrichConfig(base_url=server.url, **cfg), dataset, sids, tmp_path / "corpus")
            assert server.requests == before  # the rerun is served from the artifact's cache/
            assert json.loads((art2.path / "usage.json").read_text())["cache_hits"] >= usage["responses"]
    finally:
        ray.shutdown()
    for p in art.path.rglob("*"):
        if p.is_file():
            assert SECRET not in p.read_text(errors="ignore")
