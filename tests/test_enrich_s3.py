"""The corpus artifact in object storage (moto S3 over HTTP): published there, and a rerun
to the same s3:// output is served from that artifact's cache/."""
from __future__ import annotations

import json

from conftest_enrich import SECRET, ChatServer, assert_every_record_accounted, enrich_inputs  # noqa: F401

from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import run


def test_s3_output_and_rerun_from_its_cache(enrich_inputs, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache-root"))
    monkeypatch.setenv("ENRICH_TEST_KEY", SECRET)
    dataset, sids = enrich_inputs
    out = f"s3://{s3_bucket}/runs/corpus"
    with ChatServer() as server:
        cfg = dict(teacher="openai", model="teacher-test", api_key_env="ENRICH_TEST_KEY", max_items=4,
                   max_user_samples=2, backoff_base_s=0.01)
        art = run(EnrichConfig(base_url=server.url, **cfg), dataset, sids, out)
        sent = server.requests
    assert art.uri == out
    assert_every_record_accounted(art, 4, 2)
    assert sent > 0 and json.loads((art.path / "usage.json").read_text())["responses"] == sent
    monkeypatch.delenv("ENRICH_TEST_KEY")  # nothing to send: no key needed
    art2 = run(EnrichConfig(base_url="http://127.0.0.1:9/v1", **cfg), dataset, sids, out)
    usage = json.loads((art2.path / "usage.json").read_text())
    assert usage["requests"] == 0 and usage["cache_hits"] >= sent  # (identical prompts of items 7 and 8 hit twice)
