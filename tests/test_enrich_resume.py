"""Kill the stage half-way (SIGKILL, in a subprocess through the CLI) and rerun: the server
answers no prompt twice and is never asked again for what it answered before the kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from conftest_enrich import GATE, SECRET, ChatServer, Gate, Reply, assert_every_record_accounted, completion, enrich_inputs, smart_answer  # noqa: F401

from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import default_cache_dir, run



def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_and_resume_pays_for_nothing_twice(enrich_inputs, tmp_path):
    dataset, sids = enrich_inputs
    out = tmp_path / "corpus"
    settings = dict(teacher="openai", model="teacher-test", api_key_env="ENRICH_TEST_KEY", concurrency=4,
                    request_timeout_s=60, max_retries=2, backoff_base_s=0.01, max_items=10, max_user_samples=6,
                    temperature=0.0)
    gate = Gate()
    with ChatServer(gate) as server:
        cfg_file = tmp_path / "config.yaml"
        cfg_file.write_text(yaml.safe_dump({"enrich": {**settings, "base_url": server.url}}))
        env = {**os.environ, "ENRICH_TEST_KEY": SECRET}
        proc = subprocess.Popen([sys.executable, "-c", "from sidreasoner_core.cli import app; app()", "enrich",
                                 "--dataset", str(dataset.path), "--sids", str(sids.path), "--out", str(out),
                                 "--config", str(cfg_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        cache_file = default_cache_dir(out) / "responses.jsonl"
        deadline = time.time() + 60
        while _lines(cache_file) < GATE and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert _lines(cache_file) == GATE, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else ""
        time.sleep(0.2)  # let the blocked workers pile up requests at the gate
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        output = proc.stdout.read().decode()
        assert not out.exists()  # nothing published by the killed run
        first_answered = {k for k, v in server.answered.items() if v}
        assert len(first_answered) == GATE and server.requests > GATE  # requests were in flight at the kill
        seen_before = dict(server.seen)

        gate.release.set()
        gate.answered = -10_000  # answer everything from now on
        os.environ["ENRICH_TEST_KEY"] = SECRET
        try:
            art = run(EnrichConfig(**settings, base_url=server.url), dataset, sids, out)
        finally:
            del os.environ["ENRICH_TEST_KEY"]
        seen_after = {k: v - seen_before.get(k, 0) for k, v in server.seen.items()}
        answered = dict(server.answered)
    asked_again = {k for k in first_answered if seen_after.get(k, 0)}
    assert not asked_again, "the rerun re-sent prompts that were answered before the kill"
    assert max(answered.values()) == 1, "a prompt was answered twice"
    usage = json.loads((art.path / "usage.json").read_text())
    assert usage["cache_hits"] >= GATE
    it, us, failed = assert_every_record_accounted(art, 10, 6)
    assert failed == []
    assert not default_cache_dir(out).exists()  # merged into the artifact's cache/
    assert _lines(art.path / "cache" / "responses.jsonl") == sum(answered.values())
    assert SECRET not in output

    # a third run over the finished artifact is served entirely from its cache/
    before = server.requests
    art2 = run(EnrichConfig(**settings, base_url="http://127.0.0.1:9/v1"), dataset, sids, tmp_path / "corpus")
    assert server.requests == before and json.loads((art2.path / "usage.json").read_text())["requests"] == 0
