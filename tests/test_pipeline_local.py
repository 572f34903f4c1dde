"""The whole pipeline through kfp.local (SubprocessRunner) on the shipped sample."""
import json

import mlflow
import pytest

from sidreasoner_core.artifacts import open_artifact


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from pipelines.local import run_local

    out = tmp_path_factory.mktemp("runs")
    return run_local(config="default", out_dir=out)


def test_local_pipeline_writes_verified_artifacts(local_run):
    arts = local_run["artifacts"]
    data = next(v for k, v in arts.items() if k.startswith("data-op/"))
    dataset = open_artifact(data["path"], kind="dataset")
    assert dataset.manifest["stats"]["items"] == 400
    assert dataset.manifest["stats"]["samples"] == {"train": 249, "valid": 103, "test": 123}
    summary = json.loads((__import__("pathlib").Path(local_run["run_dir"]) / "summary.json").read_text())
    assert summary["artifacts"] == arts


def test_local_pipeline_tracks_parent_and_stage_runs(local_run):
    client = mlflow.MlflowClient(tracking_uri=local_run["tracking_uri"])
    exp = client.get_experiment_by_name("sidreasoner")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["kfp.run_id"]
    stages = {r.data.tags["sidreasoner.stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert "data" in stages
    assert stages["data"].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert stages["data"].data.metrics["items"] == 400
