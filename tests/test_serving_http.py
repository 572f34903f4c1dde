"""`mlflow models serve -m models:/<name>@champion --env-manager local` as a real process over
loopback HTTP. The champion is the packaged model registered from its artifact in (moto) S3 on a
real MLflow server, as the promotion gate registers it on a cluster. A real history from the
Industrial test split gets ten valid catalogue items; every bad request gets a 4xx with a clear
message, never a 500."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest

from conftest import free_port
from mlflow_server import mlflow_server, stop, wait_healthy  # noqa: F401
from serving_helpers import eval_model_dir, eval_sids, served_model_dir, test_histories  # noqa: F401


@pytest.fixture(scope="module")
def champion(mlflow_server, served_model_dir):  # noqa: F811
    from sidreasoner_core.registry import register_model
    from sidreasoner_core.storage import s3_client, upload_dir

    bucket = f"serve-{uuid.uuid4().hex[:8]}"
    s3_client().create_bucket(Bucket=bucket)
    artifact = f"s3://{bucket}/pipeline-root/run/package-op/served_model"
    upload_dir(served_model_dir, artifact)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    run_id = client.create_run(client.create_experiment(f"serve-{uuid.uuid4().hex[:8]}")).info.run_id
    name = f"sidreasoner-serve-{uuid.uuid4().hex[:6]}"
    register_model(mlflow_server.url, run_id, artifact, name, alias="champion")
    return name


@pytest.fixture(scope="module")
def served(champion, mlflow_server, tmp_path_factory):  # noqa: F811
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    bin_dir = Path(sys.executable).parent   # mlflow runs uvicorn from PATH
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_REGISTRY_URI=mlflow_server.url,
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{champion}@champion",
                                 "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=180, path="/ping", log_path=log_path)
        yield url
    finally:
        stop(proc)


def _post(url, body):
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, {"message": text}


@pytest.fixture(scope="module")
def titles(sample_dataset):
    from sidreasoner_core.dataset import read_items

    items = read_items(sample_dataset.path)
    return dict(zip(items["item_id"], items["title"]))


def test_served_champion_answers_a_real_test_history(served, titles, test_histories):  # noqa: F811
    status, body = _post(served, {"dataframe_records": [{"history": test_histories[0]}]})
    assert status == 200, body
    (answer,) = body["predictions"]
    recs = answer["recommendations"]
    assert len(recs) == 10 and len({r["item_id"] for r in recs}) == 10
    for r in recs:
        assert r["item_id"] in titles and r["title"] == titles[r["item_id"]]
        assert r["sid"].startswith("<a_") and isinstance(r["score"], float)
    assert answer["reasoning"] is None   # direct mode
    status, body = _post(served, {"dataframe_split": {"columns": ["history"], "data": [[h] for h in test_histories[:3]]},
                                  "params": {"k": 5}})
    assert status == 200 and [len(p["recommendations"]) for p in body["predictions"]] == [5, 5, 5]


@pytest.mark.parametrize("body, message", [
    ({"dataframe_records": [{"history": ["no-such-item"]}]}, "unknown item id(s) ['no-such-item']"),
    ({"dataframe_records": [{"history": []}]}, "history is empty"),
    ("TOO_LONG", "at most 20"),
    ("K=0", "k must be an integer from 1 to 50, got 0"),
    ("K=100000", "k must be an integer from 1 to 50, got 100000"),
    ({"dataframe_records": [{"history": "1004"}]}, "history"),   # a string, not a list
    ({"dataframe_records": [{"items": ["1004"]}]}, "history"),   # no history column
    ({"history": ["1004"]}, "dataframe"),                         # not a DataFrame payload
    ("{not json", "JSON"),
], ids=["unknown-item", "empty-history", "too-long-history", "k-zero", "k-too-large", "history-not-a-list",
        "no-history-column", "wrong-shape", "malformed-json"])
def test_bad_requests_get_4xx_with_a_clear_message(served, test_histories, body, message):  # noqa: F811
    history = test_histories[0]
    if body == "TOO_LONG":
        body = {"dataframe_records": [{"history": (history * 30)[:21]}]}
    elif isinstance(body, str) and body.startswith("K="):
        body = {"dataframe_records": [{"history": history}], "params": {"k": int(body[2:])}}
    status, answer = _post(served, body)
    assert 400 <= status < 500, (status, answer)
    assert message in answer.get("message", ""), answer.get("message", "")[:800]
