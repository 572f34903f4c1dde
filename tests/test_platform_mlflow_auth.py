"""MLflow behind authentication: a real `mlflow server` started the way k8s/base/mlflow.yaml starts it
(its command, args and environment, its basic_auth.ini; only the stores, address and secrets are
local: SQLite, the moto S3 server, loopback) and the manifest's `mlflow-users` Job run as written.
An unauthenticated client is refused; the pipeline's client (the user pipeline steps get from the
sidreasoner-mlflow-pipeline secret as MLFLOW_TRACKING_USERNAME/PASSWORD) tracks and registers; any
other user can read but not move the alias that decides what goes live."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException

from conftest import REPO, free_port
from mlflow_server import stop, wait_healthy
from pipelines import placement

MANIFEST = REPO / "k8s" / "base" / "mlflow.yaml"
SECRETS = {("sidreasoner-mlflow-admin", "username"): "admin",
           ("sidreasoner-mlflow-admin", "password"): "admin-pw-0123456789",
           ("sidreasoner-mlflow-admin", "flask-secret-key"): "f" * 64,
           ("sidreasoner-mlflow-pipeline", "username"): "pipeline",
           ("sidreasoner-mlflow-pipeline", "password"): "pipeline-pw-0123456789",
           ("sidreasoner-postgres", "password"): "unused-here",
           ("sidreasoner-object-store", "access-key"): "testing",
           ("sidreasoner-object-store", "secret-key"): "testing"}


def _objects():
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(MANIFEST.read_text()) if o}


def _env(container, config: dict, overrides: dict) -> dict:
    """The container's env as the kubelet would set it, from SECRETS and `config` (ConfigMap keys)."""
    env = {}
    for e in container["env"]:
        src = e.get("valueFrom", {})
        if "secretKeyRef" in src:
            env[e["name"]] = SECRETS[(src["secretKeyRef"]["name"], src["secretKeyRef"]["key"])]
        elif "configMapKeyRef" in src:
            env[e["name"]] = config[src["configMapKeyRef"]["key"]]
        else:
            env[e["name"]] = e["value"]
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def auth_server(moto_server, tmp_path_factory):
    from sidreasoner_core.storage import s3_client

    work = tmp_path_factory.mktemp("mlflow-auth")
    objs = _objects()
    deploy = objs[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    (container,) = deploy["containers"]
    assert container["command"] == ["mlflow", "server"]
    # The volumes the pod mounts, here as folders: the auth ConfigMap's file and the users' database.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    local = {mounts[name]: str(work / name) for name in mounts}
    auth_cm = objs[("ConfigMap", "mlflow-auth")]["data"]
    Path(local[mounts["auth-config"]]).mkdir()
    Path(local[mounts["auth-db"]]).mkdir()
    for key, text in auth_cm.items():
        Path(local[mounts["auth-config"]], key).write_text(text.replace(mounts["auth-db"], local[mounts["auth-db"]]))

    s3_client().create_bucket(Bucket="mlflow-auth-test")
    port = free_port()
    replaced = {"--backend-store-uri": f"sqlite:///{work / 'mlflow.db'}",
                "--artifacts-destination": "s3://mlflow-auth-test/artifacts",
                "--host": "127.0.0.1", "--port": str(port)}
    args = []
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={replaced[flag]}" if flag in replaced else arg)
    assert "--app-name=basic-auth" in args
    env = _env(container, {"mlflow-s3-endpoint": moto_server, "aws-region": "us-east-1"},
               {"MLFLOW_AUTH_CONFIG_PATH": container_path(container, "MLFLOW_AUTH_CONFIG_PATH", local)})
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", *args],
                                env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                start_new_session=True)
    url = f"http://localhost:{port}"  # the manifest's --allowed-hosts admit localhost:*, not 127.0.0.1
    try:
        wait_healthy(url, proc, timeout_s=120, log_path=log_path)
        yield {"url": url, "objects": objs, "log": log_path}
    finally:
        stop(proc)


def container_path(container, name, local: dict) -> str:
    value = next(e["value"] for e in container["env"] if e["name"] == name)
    for mount, folder in local.items():
        if value.startswith(mount + "/"):
            return folder + value[len(mount):]
    raise AssertionError(f"{name}={value} is on no volume of the container")


def run_users_job(auth_server) -> subprocess.CompletedProcess:
    job = auth_server["objects"][("Job", "mlflow-users")]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    env = _env(container, {}, {"MLFLOW_TRACKING_URI": auth_server["url"]})
    return subprocess.run([sys.executable, *container["command"][1:], *container["args"]], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


@pytest.fixture(scope="module")
def users(auth_server):
    done = run_users_job(auth_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created MLflow user pipeline" in done.stdout
    return done


def _get(url, user=None, password=None):
    req = urllib.request.Request(url)
    if user:
        req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def as_user(monkeypatch, user, password):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_unauthenticated_clients_are_refused(auth_server, users, monkeypatch):
    api = f"{auth_server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(api) == 401
    assert _get(api, "pipeline", "wrong-password") == 401
    assert _get(api, "nobody", "x") == 401
    assert _get(f"{auth_server['url']}/health") == 200  # the probes need no user
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        mlflow.MlflowClient(auth_server["url"]).search_experiments()


def test_the_pipeline_user_tracks_and_registers(auth_server, users, monkeypatch):
    # The env names pipeline steps get the secret under (pipelines/placement.py).
    assert placement.MLFLOW_SECRET_KEYS == {"username": "MLFLOW_TRACKING_USERNAME",
                                            "password": "MLFLOW_TRACKING_PASSWORD"}
    as_user(monkeypatch, "pipeline", SECRETS[("sidreasoner-mlflow-pipeline", "password")])
    client = mlflow.MlflowClient(auth_server["url"])
    exp = client.create_experiment("auth-pipeline")
    run = client.create_run(exp, run_name="sidreasoner-auth")
    client.log_metric(run.info.run_id, "ndcg_at_10", 0.1)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("sidreasoner-auth")
    version = client.create_model_version("sidreasoner-auth", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("sidreasoner-auth", "champion", version.version)
    assert client.get_model_version_by_alias("sidreasoner-auth", "champion").version == version.version


def test_another_user_cannot_change_what_goes_live(auth_server, users, monkeypatch):
    from mlflow.server import get_app_client

    as_user(monkeypatch, "admin", SECRETS[("sidreasoner-mlflow-admin", "password")])
    get_app_client("basic-auth", tracking_uri=auth_server["url"]).create_user("someone", "someone-pw-0123")
    as_user(monkeypatch, "pipeline", SECRETS[("sidreasoner-mlflow-pipeline", "password")])
    owner = mlflow.MlflowClient(auth_server["url"])
    owner.create_registered_model("sidreasoner-guarded")
    exp = owner.create_experiment("auth-guarded")
    run = owner.create_run(exp)
    v1 = owner.create_model_version("sidreasoner-guarded", f"runs:/{run.info.run_id}/m", run.info.run_id)
    owner.create_model_version("sidreasoner-guarded", f"runs:/{run.info.run_id}/m2", run.info.run_id)
    owner.set_registered_model_alias("sidreasoner-guarded", "champion", v1.version)

    as_user(monkeypatch, "someone", "someone-pw-0123")
    other = mlflow.MlflowClient(auth_server["url"])
    assert other.get_model_version_by_alias("sidreasoner-guarded", "champion").version == v1.version  # READ
    for change in (lambda: other.set_registered_model_alias("sidreasoner-guarded", "champion", "2"),
                   lambda: other.delete_model_version("sidreasoner-guarded", v1.version),
                   lambda: other.delete_run(run.info.run_id),
                   lambda: other.log_metric(run.info.run_id, "ndcg_at_10", 9.9)):
        with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|Permission denied"):
            change()
    as_user(monkeypatch, "pipeline", SECRETS[("sidreasoner-mlflow-pipeline", "password")])
    assert owner.get_model_version_by_alias("sidreasoner-guarded", "champion").version == v1.version


def test_the_users_job_is_idempotent(auth_server, users, monkeypatch):
    again = run_users_job(auth_server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists; password set from the secret" in again.stdout
    as_user(monkeypatch, "pipeline", SECRETS[("sidreasoner-mlflow-pipeline", "password")])
    assert mlflow.MlflowClient(auth_server["url"]).search_experiments() is not None
