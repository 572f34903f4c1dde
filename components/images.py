"""Container images the components run in on the cluster (built from docker/).

Each image's tag is a digest of what goes into it: its Dockerfile, that Dockerfile's .dockerignore
and every file the Dockerfile copies (`pipelines/images.py::content_tag`), so a tag never names two
different images. `sidreasoner compile` writes the tags to `image_tags.json` beside this file (read
here, so the image itself needs no docker/ folder); `sidreasoner compile --check` fails when one is
stale; `.github/workflows/images.yml` builds and pushes each tag that is not in the registry yet.
"""
import json
from pathlib import Path

REGISTRY = "ghcr.io/sidreasoner"
# Image name -> the Dockerfile that builds it (relative to the repository, the build context).
DOCKERFILES = {
    "sidreasoner-cpu": "docker/cpu.Dockerfile",
    "sidreasoner-trainer": "docker/trainer.Dockerfile",   # CUDA, DeepSpeed
    "sidreasoner-rollout": "docker/rollout.Dockerfile",   # CUDA, vLLM
    "sidreasoner-mlflow": "docker/mlflow.Dockerfile",     # the MLflow server of k8s/base/mlflow.yaml
}
TAGS_FILE = Path(__file__).with_name("image_tags.json")
# A missing file or entry compiles as "untagged", which `compile --check` reports as stale.
TAGS: dict[str, str] = json.loads(TAGS_FILE.read_text()) if TAGS_FILE.is_file() else {}


def image(name: str) -> str:
    """`<registry>/<name>:<content tag>` of an image built from docker/."""
    return f"{REGISTRY}/{name}:{TAGS.get(name, 'untagged')}"


CPU_IMAGE = image("sidreasoner-cpu")          # docker/cpu.Dockerfile
TRAINER_IMAGE = image("sidreasoner-trainer")  # docker/trainer.Dockerfile (CUDA, DeepSpeed)
ROLLOUT_IMAGE = image("sidreasoner-rollout")  # docker/rollout.Dockerfile (CUDA, vLLM)
MLFLOW_IMAGE = image("sidreasoner-mlflow")    # docker/mlflow.Dockerfile
