"""The packaged MLflow pyfunc model: signature and input example, offline load, answers of valid
catalogue items, clear errors for bad requests, batch scoring (`sidreasoner recommend`) with resume,
and registration that points the registry at the artifact in object storage (no second copy)."""
from __future__ import annotations

import json
import uuid

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest

from eval_helpers import one_thread  # noqa: F401
from mlflow_server import mlflow_server  # noqa: F401
from serving_helpers import eval_model_dir, eval_sids, served_model_dir, test_histories  # noqa: F401


@pytest.fixture(scope="module")
def pyfunc_model(served_model_dir):  # noqa: F811
    return mlflow.pyfunc.load_model(str(served_model_dir))


def test_signature_and_input_example(pyfunc_model, served_model_dir):  # noqa: F811
    sig = pyfunc_model.metadata.signature
    assert sig.inputs.input_names() == ["history"]
    assert {p.name: p.default for p in sig.params.params} == {"k": 10, "mode": "direct"}
    assert [c.name for c in sig.outputs.inputs] == ["recommendations", "reasoning"]
    example = json.loads((served_model_dir / "serving_input_example.json").read_text())
    rows = example["dataframe_split"]["data"] if "dataframe_split" in example else example["dataframe_records"]
    assert rows and example["params"] == {"k": 10}
    # Everything needed to recommend travels with the model: HF model dir, catalogue, serving config.
    bundle = served_model_dir / "artifacts" / "bundle"
    assert (bundle / "model" / "config.json").exists() and (bundle / "catalogue.parquet").exists()
    assert (bundle / "serving.json").exists()


def test_predict_returns_k_valid_catalogue_items(pyfunc_model, sample_dataset, test_histories, one_thread):  # noqa: F811
    from sidreasoner_core.dataset import read_items

    titles = dict(zip(read_items(sample_dataset.path)["item_id"], read_items(sample_dataset.path)["title"]))
    out = pyfunc_model.predict(pd.DataFrame({"history": test_histories[:3]}), params={"k": 10})
    assert list(out.columns) == ["recommendations", "reasoning"] and len(out) == 3
    for recs in out["recommendations"]:
        assert len(recs) == 10 and len({r["item_id"] for r in recs}) == 10
        assert all(r["item_id"] in titles and r["title"] == titles[r["item_id"]] for r in recs)
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    short = pyfunc_model.predict(pd.DataFrame({"history": test_histories[:1]}), params={"k": 3})
    assert len(short["recommendations"].iloc[0]) == 3


def test_thinking_mode_returns_reasoning(pyfunc_model, test_histories, one_thread):  # noqa: F811
    rec = pyfunc_model.unwrap_python_model().recommender
    rec.config.max_reasoning_tokens = 4   # keep the random model's reasoning short
    out = pyfunc_model.predict(pd.DataFrame({"history": test_histories[:2]}), params={"k": 5, "mode": "thinking"})
    assert all(isinstance(r, str) for r in out["reasoning"]) and all(len(r) == 5 for r in out["recommendations"])


@pytest.mark.parametrize("history, params, message", [
    (["no-such-item"], {}, "unknown item id"),
    ([], {}, "history is empty"),
    (["x"] * 21, {}, "at most 20"),
    (None, {"k": 0}, "k must be an integer from 1 to 50"),
    (None, {"k": 51}, "k must be an integer from 1 to 50"),
    (None, {"mode": "fast"}, "mode must be one of"),
])
def test_bad_requests_raise_clear_errors(pyfunc_model, test_histories, history, params, message):  # noqa: F811
    from mlflow.exceptions import MlflowException

    history = test_histories[0] if history is None else history
    with pytest.raises(MlflowException, match=message) as err:
        pyfunc_model.predict(pd.DataFrame({"history": [history]}), params=params)
    assert err.value.get_http_status_code() == 400


def test_recommend_cli_parquet_in_out_and_resume(served_model_dir, test_histories, tmp_path, one_thread):  # noqa: F811
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app
    from sidreasoner_core.serving.batch import load_recommender, recommend_file

    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pd.DataFrame({"user_id": [f"u{i}" for i in range(5)], "history": test_histories[:5]}).to_parquet(src)
    res = CliRunner().invoke(app, ["recommend", "--model", str(served_model_dir), "--input", str(src),
                                   "--output", str(dst), "--k", "4", "--chunk-rows", "2"])
    assert res.exit_code == 0, res.output
    out = pq.read_table(dst).to_pandas()
    assert list(out["user_id"]) == [f"u{i}" for i in range(5)]
    assert all(len(r) == 4 for r in out["recommendations"])
    assert not (tmp_path / "out.parquet.partial").exists()

    # A crash after two of three chunks leaves no output; the rerun decodes only the third chunk.
    rec = load_recommender(str(served_model_dir))
    again, rank, calls = tmp_path / "again.parquet", rec.rank, []

    def crashing(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return rank(*a, **kw)

    rec.rank = crashing
    with pytest.raises(KeyboardInterrupt):
        recommend_file(rec, src, again, k=4, chunk_rows=2, progress=False)
    assert not again.exists() and len(list((tmp_path / "again.parquet.partial").glob("part-*.parquet"))) == 2
    rec.rank = lambda *a, **kw: calls.append(1) or rank(*a, **kw)
    summary = recommend_file(rec, src, again, k=4, chunk_rows=2, progress=False)
    assert summary["chunks"] == 3 and summary["chunks_reused"] == 2 and len(calls) == 4
    ids = lambda df: [[r["item_id"] for r in x] for x in df["recommendations"]]  # noqa: E731
    assert ids(pq.read_table(again).to_pandas()) == ids(out)

    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"history": [test_histories[0], ["nope"]]}).to_parquet(bad)
    res = CliRunner().invoke(app, ["recommend", "--model", str(served_model_dir), "--input", str(bad),
                                   "--output", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "bad.parquet: row 1: unknown item id" in res.output
    pd.DataFrame({"items": [["a"]]}).to_parquet(bad)
    res = CliRunner().invoke(app, ["recommend", "--model", str(served_model_dir), "--input", str(bad),
                                   "--output", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "no `history` column" in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_registration_points_at_the_artifact_in_object_storage(mlflow_server, served_model_dir, s3_bucket,  # noqa: F811
                                                               test_histories, tmp_path, monkeypatch):
    """The registry's version source is the pipeline's S3 artifact: nothing is uploaded through the
    tracking server, and `models:/name@alias` loads and answers from that one copy."""
    from sidreasoner_core.registry import register_model
    from sidreasoner_core.storage import s3_client, split_s3, upload_dir

    artifact = f"s3://{s3_bucket}/pipeline-root/run-1/package-op/served_model"
    upload_dir(served_model_dir, artifact)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    run_id = client.create_run(client.create_experiment(f"reg-s3-{uuid.uuid4().hex[:8]}")).info.run_id
    bucket, prefix = split_s3(mlflow_server.artifacts_destination)

    def stored():
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = stored()
    name = f"sidreasoner-s3-{uuid.uuid4().hex[:6]}"
    out = register_model(mlflow_server.url, run_id, artifact, name, alias="champion")
    assert out["source"] == artifact and not out["uploaded"]
    assert stored() == before, "registration uploaded a copy through the tracking server"
    assert client.get_model_version(name, str(out["version"])).source == artifact
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # models:/ URIs resolve through these
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.url)
    answer = mlflow.pyfunc.load_model(f"models:/{name}@champion", dst_path=str(tmp_path)).predict(pd.DataFrame({"history": test_histories[:1]}))
    assert len(answer["recommendations"].iloc[0]) == 10
