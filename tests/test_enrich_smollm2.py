"""End to end against a loopback server backed by a REAL small model (SmolLM2-135M-Instruct via
transformers). A 135M model rarely satisfies the rules, so records may end failed: the point is
that the pipeline completes and every record is valid or reported."""
from __future__ import annotations

import threading

import pytest
from conftest_enrich import ChatServer, Reply, assert_every_record_accounted, completion, enrich_inputs  # noqa: F401

from sidreasoner_core.enrich import validate
from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.enrich.stage import run


class ModelTeacher:
    """Serves /v1/chat/completions with greedy decoding of a local HF model (one at a time)."""

    def __init__(self, ref: str, max_new_tokens: int):
        from sidreasoner_core.models import load_model

        self.model, self.tok = load_model(ref)
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()

    def __call__(self, messages, n):
        import torch

        with self.lock, torch.no_grad():
            ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = out[0, ids["input_ids"].shape[1]:]
            text = self.tok.decode(new, skip_special_tokens=True)
        return Reply(body=completion(text, int(ids["input_ids"].shape[1]), int(new.shape[0])))


@pytest.mark.slow
def test_smollm2_teacher_end_to_end(enrich_inputs, tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core box, 2 intra-op threads spin-wait: ~5x slower
    try:
        dataset, sids = enrich_inputs
        teacher = ModelTeacher("smollm2", max_new_tokens=16)
        with ChatServer(teacher) as server:
            cfg = EnrichConfig(teacher="openai", base_url=server.url, model="smollm2", api_key_env="", max_items=2,
                               max_user_samples=1, max_tokens=16, max_attempts=1, max_description_chars=150,
                               concurrency=2, request_timeout_s=300, temperature=0.0, min_paragraph_sentences=2)
            art = run(cfg, dataset, sids, tmp_path / "corpus")
            requests = server.requests
    finally:
        torch.set_num_threads(threads)
    it, us, failed = assert_every_record_accounted(art, 2, 1)
    assert requests >= 2  # an analysis (items 7 and 8 of the sample are identical: one request) + a reasoning
    for r in it[it.status == "ok"].itertuples():
        assert r.sid in r.paragraph
    for r in us[us.status == "ok"].itertuples():
        assert validate.check_user_text(r.reasoning, r.history_sids, [], r.target_sid, "", False)[1] == []
    assert all(f["rejections"] or "request failed" in f["error"] for f in failed)
