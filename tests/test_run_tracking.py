"""The MLflow side of a pipeline run against a real `mlflow server`: the parent run found from the run
id in the environment (never a task parameter), named by category and date, the input as its dataset;
the exit handler's code marking it FAILED with the failed stage named, or FINISHED."""
import datetime
import shutil

import mlflow
import pytest
from kfp import dsl

from components.tracking import finish_tracking_op, start_tracking_op
from conftest import REPO
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from sidreasoner_core import tracking
from sidreasoner_core.fingerprint import fingerprint
from sidreasoner_core.run_context import RUN_ID_ENV

SAMPLE = REPO / "sample_data" / "Industrial_and_Scientific"


@pytest.fixture
def data_dir(tmp_path):
    out = tmp_path / "input"
    shutil.copytree(SAMPLE, out)
    return out


def _status(state: str, message: str = "") -> dsl.PipelineTaskFinalStatus:
    return dsl.PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="runs/x",
                                       pipeline_task_name="exit-handler-1", error_code=None, error_message=message)


def test_failed_pipeline_marks_the_parent_run_failed_naming_the_stage(mlflow_server, data_dir, monkeypatch):
    url = mlflow_server.url
    monkeypatch.setenv(RUN_ID_ENV, "run-failed-1")
    start_tracking_op.python_func(tracking_uri=url, experiment="dag-failure", category="Industrial",
                                  preset="smoke", train_gpus=1, gpu_type="nvidia.com/gpu", data_uri=str(data_dir))
    # a retried start-tracking finds the run it opened instead of opening a second one
    start_tracking_op.python_func(tracking_uri=url, experiment="dag-failure", category="Industrial",
                                  preset="smoke", train_gpus=1, gpu_type="nvidia.com/gpu", data_uri=str(data_dir))
    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name("dag-failure")
    parents = client.search_runs([exp.experiment_id])
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == f"Industrial-{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    assert parent.data.params == {"preset": "smoke", "train_gpus": "1", "gpu_type": "nvidia.com/gpu"}
    (ds,) = parent.inputs.dataset_inputs
    assert ds.dataset.source and str(data_dir) in ds.dataset.source
    assert ds.dataset.digest == fingerprint(data_dir).removeprefix("sha256:")[-32:]

    # stages find the parent from the env; one succeeds, one raises
    with tracking.stage_run("data", tracking_uri=url) as t:
        t.log_metrics({"items": 400})
    with pytest.raises(RuntimeError, match="NCCL"):
        with tracking.stage_run("grpo", tracking_uri=url):
            raise RuntimeError("NCCL timeout")
    stages = {r.data.tags["sidreasoner.stage"]: r for r in client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert set(stages) == {"data", "grpo"} and stages["grpo"].info.status == "FAILED"
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"

    finish_tracking_op.python_func(tracking_uri=url, status=_status("FAILED", "task grpo-op failed"))
    closed = client.get_run(parent.info.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags[tracking.FAILED_TASKS_TAG] == "grpo"
    assert closed.data.tags["kfp.error"] == "task grpo-op failed" and closed.data.tags["kfp.state"] == "FAILED"


def test_a_killed_stage_is_named_and_closed(mlflow_server, data_dir, monkeypatch):
    """A pod killed by its timeout leaves its nested run RUNNING: the handler names and closes it."""
    url = mlflow_server.url
    monkeypatch.setenv(RUN_ID_ENV, "run-killed-1")
    parent_id = tracking.start_pipeline_tracking(url, "dag-killed", "Beauty", [str(data_dir)])
    client = mlflow.MlflowClient(url)
    hung = client.create_run(client.get_run(parent_id).info.experiment_id, run_name="align",
                             tags={"mlflow.parentRunId": parent_id, "sidreasoner.stage": "align"})
    finish_tracking_op.python_func(tracking_uri=url, status=_status("CANCELLED"))
    assert client.get_run(parent_id).info.status == "KILLED"
    assert client.get_run(parent_id).data.tags[tracking.FAILED_TASKS_TAG] == "align"
    assert client.get_run(hung.info.run_id).info.status == "KILLED"


def test_succeeded_pipeline_finishes_the_parent_run(mlflow_server, data_dir, monkeypatch):
    url = mlflow_server.url
    monkeypatch.setenv(RUN_ID_ENV, "run-ok-1")
    parent_id = tracking.start_pipeline_tracking(url, "dag-ok", "", [str(data_dir)])
    assert mlflow.MlflowClient(url).get_run(parent_id).info.run_name.startswith("all-")
    finish_tracking_op.python_func(tracking_uri=url, status=_status("SUCCEEDED"))
    run = mlflow.MlflowClient(url).get_run(parent_id)
    assert run.info.status == "FINISHED" and tracking.FAILED_TASKS_TAG not in run.data.tags


def test_a_stage_without_its_parent_run_fails_clearly(mlflow_server, monkeypatch):
    monkeypatch.setenv(RUN_ID_ENV, "run-never-started")
    with pytest.raises(RuntimeError, match="no MLflow parent run tagged kfp.run_id=run-never-started"):
        with tracking.stage_run("data", tracking_uri=mlflow_server.url):
            pass


def test_importing_the_package_turns_mlflow_telemetry_off():
    """MLflow's import-time telemetry thread races requests over os.environ (a KeyError in a rehearsed pod)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    out = subprocess.run([sys.executable, "-c", "import sidreasoner_core, mlflow\n"
                          "from mlflow.telemetry.client import get_telemetry_client\nprint(get_telemetry_client())"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "None"
