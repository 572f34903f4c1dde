"""A tiny GGUF file written from the built-in tiny Qwen3 (float32 tensors, byte-level BPE
tokenizer), so the resolver's GGUF path is tested in seconds without the 98 MB SmolLM2 file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# HF parameter name (per layer) -> GGUF tensor name (llama.cpp convention)
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def tiny_qwen3_for_gguf(dest: Path) -> Path:
    """tiny-qwen3's tokenizer + a random Qwen3 with head_dim 128: transformers' GGUF reader takes
    Qwen3's head_dim from the config default (128), it has no `attention.key_length` mapping."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sidreasoner_core.models import TINY, resolve_model_dir

    src = resolve_model_dir(TINY)
    cfg = AutoConfig.from_pretrained(src)
    cfg.head_dim = 128
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    return dest


def write_tiny_gguf(model_dir: Path, dest: Path) -> Path:
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    w = gguf.GGUFWriter(str(dest), arch="qwen3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None)
                         else float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    backend = json.loads(tok.backend_tokenizer.to_str())
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    specials = set(tok.all_special_tokens)
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    types = [gguf.TokenType.CONTROL if t in specials else
             gguf.TokenType.USER_DEFINED if t in ("<think>", "</think>") else gguf.TokenType.NORMAL for t in tokens]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in _LAYER.items():
            w.add_tensor(f"blk.{i}.{gg}", np.ascontiguousarray(weights[f"model.layers.{i}.{hf}"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dest
