"""The local pipeline logs its lineage to a real `mlflow server` (SQLite store, artifacts on moto S3),
and the lineage reads back by API: one parent run tagged with the KFP run id, one nested run per
stage with params, metrics, input datasets (source URI + digest) and output tags. A secret in the
environment reaches no param, tag, dataset or artifact."""
from __future__ import annotations

import json
import os
import uuid

import mlflow
import pytest

from mlflow_server import mlflow_server  # noqa: F401  (fixture)

SECRET = "sk-test-SECRET123"
SECRET_ENV = ("OPENAI_API_KEY", "SIDREASONER_TEACHER_API_KEY")


# The smoke preset: every stage with the tiny random Qwen3 and minimal budgets; the lineage,
# not the learning, is under test.
PRESET = "smoke"


@pytest.fixture(scope="module")
def lineage(mlflow_server, tmp_path_factory):  # noqa: F811
    from pipelines.local import run_local

    saved = {k: os.environ.get(k) for k in SECRET_ENV}
    os.environ.update({k: SECRET for k in SECRET_ENV})
    experiment = f"lineage-{uuid.uuid4().hex[:8]}"
    try:
        summary = run_local(config=PRESET, out_dir=tmp_path_factory.mktemp("runs"),
                            tracking_uri=mlflow_server.url, experiment=experiment)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created on {mlflow_server.url}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {"summary": summary, "client": client, "runs": runs, "experiment": exp}


def _parent(runs):
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0]


def _stages(runs):
    return {r.data.tags["sidreasoner.stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}


def test_parent_run_tagged_with_kfp_run_id(lineage):
    parent = _parent(lineage["runs"])
    run_id_tag = parent.data.tags.get("kfp.run_id", "")
    assert run_id_tag and "{{" not in run_id_tag  # a real id, not an unresolved placeholder
    stages = _stages(lineage["runs"])
    assert "data" in stages
    for name, run in stages.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, name
        assert run.data.tags.get("kfp.run_id") == run_id_tag, f"{name} lacks the parent's kfp.run_id"
        assert run.info.status == "FINISHED", f"{name}: {run.info.status}"


def test_stage_runs_log_params_metrics_and_outputs(lineage):
    for name, run in _stages(lineage["runs"]).items():
        assert run.data.params, f"stage {name} logged no params"
        assert run.data.metrics, f"stage {name} logged no metrics"
        outputs = {k: v for k, v in run.data.tags.items() if k.startswith("output.")}
        kinds = {k.split(".")[1] for k in outputs}
        assert kinds, f"stage {name} logged no output tags"
        for kind in kinds:
            assert outputs[f"output.{kind}.uri"], f"{name}: empty output URI"
            assert len(outputs[f"output.{kind}.digest"]) >= 32, f"{name}: output digest missing"
    data = _stages(lineage["runs"])["data"]
    assert data.data.metrics["items"] == 400
    assert data.data.params  # the data config, flattened


def test_inputs_are_datasets_with_uri_and_digest_of_upstream_outputs(lineage):
    """Every stage after `data` names its inputs; each input is an output of another stage."""
    stages = _stages(lineage["runs"])
    produced = {}  # uri -> (stage, digest)
    for name, run in stages.items():
        for key, uri in run.data.tags.items():
            if key.startswith("output.") and key.endswith(".uri"):
                produced[uri] = (name, run.data.tags[key[:-4] + ".digest"])
    for name, run in stages.items():
        inputs = run.inputs.dataset_inputs if run.inputs else []
        if name == "data":
            continue  # raw data is not a pipeline artifact
        assert inputs, f"stage {name} logged no input datasets"
        for ds_input in inputs:
            ds = ds_input.dataset
            source = json.loads(ds.source)
            uri = source.get("uri") or source.get("url") or ""
            assert uri and ds.digest, f"{name}: input {ds.name} lacks source URI or digest"
            assert uri in produced, f"{name}: input {uri} is no stage's output"
            assert produced[uri][1].startswith(ds.digest), f"{name}: input digest differs from {produced[uri][0]}'s output"


def test_artifacts_are_stored_on_s3(lineage, mlflow_server):  # noqa: F811
    from sidreasoner_core.storage import s3_client, split_s3

    logged = []
    for run in lineage["runs"]:
        logged += [f.path for f in lineage["client"].list_artifacts(run.info.run_id)]
    assert logged, "no run logged an artifact"
    bucket, prefix = split_s3(mlflow_server.artifacts_destination)
    keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    exp_id = lineage["experiment"].experiment_id
    assert any(f"/{exp_id}/" in k for k in keys), f"no object of experiment {exp_id} under s3://{bucket}/{prefix}"


def test_no_secret_in_params_tags_datasets_or_artifacts(lineage, mlflow_server, tmp_path):  # noqa: F811
    client = lineage["client"]
    for run in lineage["runs"]:
        where = f"run {run.info.run_name}"
        for k, v in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in k and SECRET not in str(v), f"{where}: secret in {k}"
        for ds_input in (run.inputs.dataset_inputs if run.inputs else []):
            blob = json.dumps([ds_input.dataset.to_dictionary(), [t.value for t in ds_input.tags]])
            assert SECRET not in blob, f"{where}: secret in input dataset {ds_input.dataset.name}"
        dst = tmp_path / run.info.run_id
        dst.mkdir()
        if client.list_artifacts(run.info.run_id):
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(dst),
                                                tracking_uri=mlflow_server.url)
        for path in dst.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), f"{where}: secret in artifact {path.name}"
    # Belt and braces: the raw stores (SQLite backend and every S3 object) hold no copy either.
    for db_file in mlflow_server.db_path.parent.glob(mlflow_server.db_path.name + "*"):  # incl. -wal/-journal
        assert SECRET.encode() not in db_file.read_bytes(), f"secret in {db_file.name}"
    from sidreasoner_core.storage import s3_client, split_s3

    s3 = s3_client()
    bucket, prefix = split_s3(mlflow_server.artifacts_destination)
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
               for o in page.get("Contents", [])]
    assert objects
    for obj in objects:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        assert SECRET.encode() not in body, f"secret in s3://{bucket}/{obj['Key']}"


def test_final_model_registered_with_alias_and_parent_closed(lineage, tmp_path, mlflow_server):  # noqa: F811
    client = lineage["client"]
    parent = _parent(lineage["runs"])
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    version = client.get_model_version_by_alias("sidreasoner", "candidate")
    assert version.run_id == parent.info.run_id and version.status == "READY"
    # kfp.local writes artifacts on this machine, which the server cannot read: uploaded to the run.
    # (On a cluster the artifact is in object storage and registered as is: test_serving_model.)
    assert version.source == f"runs:/{parent.info.run_id}/model"
    # Explicit URIs, no global mlflow state: other tests in this process set their own.
    got = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path),
                                              tracking_uri=mlflow_server.url)
    from pathlib import Path

    assert (Path(got) / "MLmodel").exists()
    model_dir = Path(got) / "artifacts" / "bundle" / "model"
    assert (model_dir / "config.json").exists() and any(p.suffix == ".safetensors" for p in model_dir.iterdir())
