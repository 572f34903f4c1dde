"""A real `mlflow server` subprocess for tests: SQLite backend store, artifacts proxied to the
moto S3 server (over HTTP) from `tests/conftest.py::moto_server`.

Use from a test module:

    from mlflow_server import mlflow_server  # noqa: F401  (pytest fixture)

    def test_x(mlflow_server):
        client = mlflow.MlflowClient(mlflow_server.url)

The fixture is session-scoped (start-up takes seconds); tests isolate themselves with their own
experiment or model names. Clients talk HTTP only; they need no S3 credentials because the server
proxies artifacts (`mlflow-artifacts:/` URIs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port

ARTIFACT_BUCKET = "mlflow-artifacts"
ARTIFACT_PREFIX = "tracking"


@dataclass
class MlflowServer:
    url: str
    db_path: Path
    artifacts_destination: str   # s3://bucket/prefix on the moto server
    s3_endpoint: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0, path: str = "/health",
                 log_path: Path | None = None) -> None:
    """Poll `url + path` until it answers 200; fail at once if the server process exits (with its log's tail)."""
    def tail() -> str:
        return "\n" + log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}{tail()}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}{path} not up after {timeout_s}s{tail()}")


def start_mlflow_server(workdir: Path, s3_endpoint: str, bucket: str = ARTIFACT_BUCKET,
                        prefix: str = ARTIFACT_PREFIX) -> tuple[subprocess.Popen, MlflowServer]:
    """Start `mlflow server` (1 worker, free loopback port); returns the process and its handle."""
    from sidreasoner_core.storage import s3_client

    try:
        s3_client().create_bucket(Bucket=bucket)
    except Exception as exc:  # already there from an earlier server in this session
        if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
            raise
    port = free_port()
    db = workdir / "mlflow.db"
    log_path = workdir / "mlflow-server.log"
    destination = f"s3://{bucket}/{prefix}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=s3_endpoint, AWS_ENDPOINT_URL_S3=s3_endpoint)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{db}",
             "--artifacts-destination", destination, "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = MlflowServer(url=url, db_path=db, artifacts_destination=destination, s3_endpoint=s3_endpoint,
                          log_path=log_path)
    try:
        wait_healthy(url, proc)
    except Exception as exc:
        stop(proc)
        raise RuntimeError(f"{exc}\n--- server log ---\n{server.log()[-4000:]}") from exc
    return proc, server


def stop(proc: subprocess.Popen) -> None:
    """Stop the server we started and its workers: it leads its own process group (start_new_session)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def mlflow_server(moto_server, tmp_path_factory):
    """A running MLflow tracking server; yields an `MlflowServer` (url, db_path, artifacts_destination)."""
    proc, server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), moto_server)
    yield server
    stop(proc)
