"""Every preset x every task of the compiled pipelines: what the task's code will need (device, GPUs,
packages, data files, env) is present in its placement, its image's lock file and build context.
Each defect the cluster path once had is put back into a copy and must be named."""
import dataclasses
import shutil
from pathlib import Path

import pytest

from components.images import CPU_IMAGE, ROLLOUT_IMAGE
from pipelines import contract, images
from sidreasoner_core.config import list_presets
from sidreasoner_core.stages import validate_pipeline_config

REPO = images.REPO
COMPILED = sorted((REPO / "pipelines" / "compiled").glob("*.yaml"))
CASES = [(preset, y.name, p) for preset in sorted(list_presets()) for y in COMPILED
         for p in contract.placements(y)]


@pytest.mark.parametrize("preset,pipeline,placement", CASES,
                         ids=[f"{c[0]}-{c[1].removesuffix('.yaml')}-{c[2].task}" for c in CASES])
def test_task_gets_what_its_code_needs(preset, pipeline, placement):
    config = validate_pipeline_config(preset, name=preset)
    assert contract.violations(placement, contract.needs(placement.function, config)) == []


def test_every_task_of_the_pipeline_is_covered():
    functions = {p.function for p in contract.placements()}
    assert {"data_op", "sids_op", "enrich_op", "align_op", "coldstart_op", "grpo_op", "evaluate_op",
            "baselines_op", "package_op", "promote_op", "start_tracking_op"} <= functions
    assert all(p.image in images.IMAGES for y in COMPILED for p in contract.placements(y))


def test_every_section_with_a_device_or_a_launch_is_read_by_the_contract():
    """A stage that gains a `device` field (or a trainer's num_gpus) must be in the map that both the
    contract and the rehearsal's CPU swaps read, or its GPU request would go unchecked and unrehearsed."""
    from sidreasoner_core.stages import SECTIONS, config_class

    with_device = {s for s in SECTIONS if "device" in config_class(s).model_fields}
    assert with_device == set(contract.DEVICE_SECTIONS.values())
    for section, sub in contract.LAUNCH_SECTIONS.values():
        assert "num_gpus" in config_class(section).model_fields[sub].annotation.model_fields
    functions = {p.function for p in contract.placements()}
    assert set(contract.DEVICE_SECTIONS) | set(contract.LAUNCH_SECTIONS) <= functions


def test_needs_follow_the_cluster_config():
    cfg = validate_pipeline_config("cluster")
    by_fn = {fn: {(n.kind, n.value) for n in contract.needs(fn, cfg)}
             for fn in ("sids_op", "align_op", "grpo_op", "enrich_op")}
    assert ("cuda", True) in by_fn["sids_op"]
    assert {("package", "deepspeed"), ("gpus", 8), ("file", "sidreasoner_core/resources/gsm8k_train.jsonl")} <= by_fn["align_op"]
    assert {("package", "vllm"), ("package", "deepspeed"), ("gpus", 8)} <= by_fn["grpo_op"]
    assert ("env", "OPENAI_API_KEY") in by_fn["enrich_op"]


# ---------------------------------------------------------------- defects put back

def _placement(function: str) -> contract.Placement:
    return next(p for p in contract.placements() if p.function == function)


def _repo_copy(tmp_path: Path) -> Path:
    """The repository with a private docker/ (lock files, .dockerignore) to break."""
    root = tmp_path / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name == "docker":
            shutil.copytree(entry, root / "docker")
        elif not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    return root


def _drop_pin(path: Path, name: str) -> None:
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if not ln.lower().startswith(name + "==")]
    assert len(kept) == len(lines) - 1, f"{path} has no {name} pin to remove"
    path.write_text("\n".join(kept) + "\n")


def _cluster(**sections) -> dict:
    cfg = validate_pipeline_config("cluster")
    for dotted, value in sections.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return cfg


def test_defect_sids_on_the_cpu_image():
    """sids.device: cuda while semantic-ids runs on the CPU image without a GPU (the old placement)."""
    old = dataclasses.replace(_placement("sids_op"), image=CPU_IMAGE, gpus=0)
    found = contract.violations(old, contract.needs("sids_op", _cluster()))
    assert any("semantic-ids" in v and "a CUDA device (for sids.device: cuda)" in v and "CPU-only torch" in v for v in found), found


def test_defect_deepspeed_missing_from_the_rollout_lock(tmp_path):
    repo = _repo_copy(tmp_path)
    _drop_pin(repo / "docker" / "constraints-rollout.txt", "deepspeed")
    found = contract.violations(_placement("grpo_op"), contract.needs("grpo_op", _cluster()), repo)
    assert any("grpo" in v and "grpo.cluster.deepspeed: zero3" in v and "constraints-rollout.txt" in v
               and "has no deepspeed" in v for v in found), found


def test_defect_vllm_missing_from_the_rollout_lock(tmp_path):
    repo = _repo_copy(tmp_path)
    _drop_pin(repo / "docker" / "constraints-rollout.txt", "vllm")
    found = contract.violations(_placement("grpo_op"), contract.needs("grpo_op", _cluster()), repo)
    assert any("grpo.use_vllm" in v and "has no vllm" in v for v in found), found


def test_defect_gsm8k_from_sample_data(tmp_path):
    """The old default: sample_data/gsm8k/, which every image's .dockerignore leaves out."""
    repo = _repo_copy(tmp_path)
    (repo / "sample_data").unlink()
    (repo / "sample_data" / "gsm8k").mkdir(parents=True)
    shutil.copy(REPO / "sidreasoner_core/resources/gsm8k_train_sample.jsonl", repo / "sample_data/gsm8k/train.jsonl")
    found = contract.violations(_placement("align_op"), contract.needs(
        "align_op", _cluster(align__gsm8k_train="sample_data/gsm8k/train.jsonl")), repo)
    assert any("align.gsm8k_train" in v and "sample_data/gsm8k/train.jsonl" in v and "dockerignore" in v
               for v in found), found


def test_defect_data_file_left_out_by_dockerignore(tmp_path):
    repo = _repo_copy(tmp_path)
    ignore = repo / "docker" / "trainer.Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text() + "sidreasoner_core/resources\n")
    found = contract.violations(_placement("align_op"), contract.needs("align_op", _cluster()), repo)
    assert any("gsm8k_train.jsonl is excluded" in v and "trainer.Dockerfile.dockerignore" in v for v in found), found


def test_defect_more_gpus_than_placed():
    """num_gpus 8 under the old TRAIN_GPUS = 1 placement."""
    one = dataclasses.replace(_placement("align_op"), gpus=1)
    found = contract.violations(one, contract.needs("align_op", _cluster()))
    assert any("align.train.num_gpus" in v and "requests 1 GPU" in v for v in found), found


def test_defect_vllm_colocate_without_gpu_and_teacher_without_secret():
    no_gpu = dataclasses.replace(_placement("grpo_op"), gpus=0)
    found = contract.violations(no_gpu, contract.needs("grpo_op", _cluster()))
    assert any("grpo.use_vllm (colocate)" in v and "no GPU" in v for v in found), found
    enrich = _placement("enrich_op")
    no_secret = dataclasses.replace(enrich, env={k: v for k, v in enrich.env.items() if k != "OPENAI_API_KEY"})
    found = contract.violations(no_secret, contract.needs("enrich_op", _cluster()))
    assert any("OPENAI_API_KEY" in v and "no secret" in v for v in found), found


def test_defect_image_without_a_dockerfile():
    odd = dataclasses.replace(_placement("data_op"), image="ghcr.io/sidreasoner/other:0.1.0")
    assert "not built by any docker/ Dockerfile" in contract.violations(odd, [])[0]


def test_lock_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "lock.txt"
    bad.write_text("# header\ntorch==2.13.0\nvllm>=0.3\n")
    with pytest.raises(ValueError, match=r"lock.txt:3: .*vllm>=0.3"):
        images.read_lock(bad)


def test_rollout_image_lock_names_its_extras():
    pins = images.image_packages(ROLLOUT_IMAGE)
    assert {"vllm", "deepspeed", "trl"} <= set(pins)
