"""sidreasoner_core.vllm_cpu without vLLM: the server launcher's failure path and the server command."""
import sys

import pytest

from sidreasoner_core import vllm_cpu


def test_serve_fails_with_the_log_when_the_server_dies_before_it_is_up(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with 3 before it was up(.|\n)*no model here"):
        with vllm_cpu.serve(cmd, vllm_cpu.free_port(), tmp_path / "server.log", timeout_s=60):
            pass


def test_server_command_is_trls_server_with_the_reload_extension(tmp_path):
    cmd = vllm_cpu.server_command(tmp_path, 8000)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(cmd)
    # trl vllm-serve's logprob settings (importance-sampling correction) and our weight reload
    assert "--logprobs-mode processed_logprobs --max-logprobs -1" in text
    assert f"--worker-extension-cls {vllm_cpu.WORKER_EXTENSION}" in text
    assert f"--kv-cache-memory-bytes {1 << 30}" in text and "--enforce-eager" in text
