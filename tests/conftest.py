"""Shared fixtures: the shipped sample as a dataset artifact, a moto S3 server over HTTP,
the tiny model. Servers are real processes/threads on loopback, started here."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "Industrial_and_Scientific"
GSM8K_DIR = REPO / "sidreasoner_core" / "resources"  # the GSM8K files every image ships

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests, servers and pipeline steps share the cores: OpenMP threads sleep instead of spinning (sidreasoner_core/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_bench(name: str):
    """A `bench/<name>.py` script as a module (bench/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """The data stage's artifact built from the shipped Industrial sample."""
    from sidreasoner_core.artifacts import open_artifact
    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.data.stage import run

    out = tmp_path_factory.mktemp("dataset") / "dataset"
    run(DataConfig(), SAMPLE, out)
    return open_artifact(out, kind="dataset")


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server in server mode over HTTP; yields its endpoint URL and sets AWS_* env."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL")}
    os.environ.update({"AWS_ENDPOINT_URL_S3": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_server):
    import uuid

    from sidreasoner_core.storage import s3_client

    name = f"test-{uuid.uuid4().hex[:8]}"
    s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def tiny_model_dir():
    """A local HF directory of the built-in tiny random Qwen3 model (no SID tokens)."""
    from sidreasoner_core.models import TINY, resolve_model_dir

    return resolve_model_dir(TINY)
