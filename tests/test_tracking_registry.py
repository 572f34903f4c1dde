"""`register_model` against a real MLflow server: a model directory logged as plain files becomes a
registered version linked to its run, with an alias that resolves to it."""
from __future__ import annotations

import uuid

import mlflow
import pytest

from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from sidreasoner_core.registry import register_model


@pytest.fixture
def logged_model(mlflow_server, tiny_model_dir):  # noqa: F811
    """A run with the tiny model's files logged under `model/` (plain files, no MLflow flavour)."""
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp_id = client.create_experiment(f"registry-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp_id, run_name="reasoning")
    client.log_artifacts(run.info.run_id, str(tiny_model_dir), artifact_path="model")
    client.set_terminated(run.info.run_id)
    return client, run.info.run_id


def test_register_model_creates_version_and_alias(mlflow_server, logged_model):  # noqa: F811
    client, run_id = logged_model
    name = f"sidreasoner-{uuid.uuid4().hex[:6]}"
    uri = f"runs:/{run_id}/model"
    first = register_model(mlflow_server.url, run_id, uri, name, alias="champion")
    assert first["version"] == 1 and first["model_uri"] == f"models:/{name}@champion"
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == "1" and version.run_id == run_id and version.status == "READY"
    # The registered version resolves to the logged files (config + tokenizer of the tiny model).
    files = {f.path.split("/")[-1] for f in client.list_artifacts(run_id, "model")}
    assert "config.json" in files

    # A second registration moves the alias; the old version stays.
    second = register_model(mlflow_server.url, run_id, uri, name, alias="champion", tags={"category": "Industrial"})
    assert second["version"] == 2
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version(name, "2").tags["category"] == "Industrial"
    assert {v.version for v in client.search_model_versions(f"name='{name}'")} == {"1", "2"}


def test_register_model_rejects_bad_input(mlflow_server, logged_model):  # noqa: F811
    _, run_id = logged_model
    with pytest.raises(ValueError, match="alias"):
        register_model(mlflow_server.url, run_id, f"runs:/{run_id}/model", "m", alias="v3")
    with pytest.raises(ValueError, match="model name"):
        register_model(mlflow_server.url, run_id, f"runs:/{run_id}/model", "a/b")
    with pytest.raises(ValueError, match="tracking URI"):
        register_model("", run_id, f"runs:/{run_id}/model", "m")
    with pytest.raises(mlflow.exceptions.MlflowException):
        register_model(mlflow_server.url, "0" * 32, "s3://bucket/model", "m")


def test_register_local_model_dir_uploads_it_to_the_run(mlflow_server, tiny_model_dir, tmp_path,  # noqa: F811
                                                         monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # models:/ URIs resolve through these
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.url)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    run = client.create_run(client.create_experiment(f"registry-local-{uuid.uuid4().hex[:8]}"))
    run_id = run.info.run_id
    name = f"sidreasoner-local-{uuid.uuid4().hex[:6]}"
    # The server refuses a local path as a source; the helper logs the directory to the run first.
    out = register_model(mlflow_server.url, run_id, str(tiny_model_dir), name, alias="candidate")
    assert out["source"] == f"runs:/{run_id}/model"
    got = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@candidate", dst_path=str(tmp_path),
                                              tracking_uri=mlflow_server.url)
    from pathlib import Path

    assert (Path(got) / "config.json").read_text() == (tiny_model_dir / "config.json").read_text()
    with pytest.raises(FileNotFoundError):
        register_model(mlflow_server.url, run_id, str(tmp_path / "missing"), name)

