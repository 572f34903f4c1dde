"""The baselines and evaluate components end to end on the shipped sample (tiny model), the CLI,
and bad inputs."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from eval_helpers import TINY_BASELINES, eval_model_dir, eval_sids, one_thread, write_sids  # noqa: F401
from sidreasoner_core.artifacts import open_artifact, write_artifact

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = {"max_samples": 10, "thinking_samples": 3, "max_reasoning_tokens": 6, "best_of_n": 2,
        "best_of_n_samples": 2, "batch_size": 5, "max_threads": 1}
CONFIG = json.dumps({"baselines": {**TINY_BASELINES, "max_threads": 1}, "evaluate": EVAL})


@pytest.fixture(scope="module")
def baselines_art(sample_dataset, tmp_path_factory):
    from kfp.dsl import Dataset, Metrics, Model

    from components.evaluation import baselines_op

    root = tmp_path_factory.mktemp("baselines")
    out, metrics = Model(name="baselines", uri=str(root / "b")), Metrics(name="m", uri=str(root / "m"))
    baselines_op.python_func(dataset=Dataset(name="d", uri=str(sample_dataset.path)), config_json=CONFIG,
                             baselines=out, metrics=metrics)
    assert metrics.metadata["popularity_n"] == 123 and 0 <= metrics.metadata["sasrec_recall_10"] <= 1
    return open_artifact(out.path, kind="baselines")


def test_evaluate_component_with_a_model_artifact(sample_dataset, eval_sids, eval_model_dir, baselines_art, tmp_path):
    from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

    from components.evaluation import evaluate_op

    with write_artifact(tmp_path / "model_art", kind="model") as d:   # the training stages' convention
        shutil.copytree(eval_model_dir, d / "model")
    outs = {"evaluation": Dataset(name="e", uri=str(tmp_path / "eval")), "metrics": Metrics(name="m", uri=str(tmp_path / "m")),
            "report": Markdown(name="r", uri=str(tmp_path / "report.md")),
            "report_html": HTML(name="h", uri=str(tmp_path / "report.html"))}
    evaluate_op.python_func(dataset=Dataset(name="d", uri=str(sample_dataset.path)), config_json=CONFIG,
                            sids=Dataset(name="s", uri=str(eval_sids.path)), model=Model(name="x", uri=str(tmp_path / "model_art")),
                            baselines=Model(name="b", uri=str(baselines_art.path)), **outs)
    m = outs["metrics"].metadata
    assert m["direct_n"] == 10 and m["direct_invalid"] == 0 and m["thinking_n"] == 3 and m["thinking_invalid"] == 0
    assert m["thinking_forced_close_rate"] == 1.0 and m["thinking_reasoning_tokens_mean"] == 6
    assert "best_of_n_recall_10_n2" in m and m["popularity_n"] == 10 and m["sasrec_n"] == 10  # same samples
    art = open_artifact(outs["evaluation"].path, kind="evaluation")
    catalogue = set(pq.read_table(eval_sids.path / "sids.parquet").column("sid").to_pylist())
    pred = pq.read_table(art.path / "predictions.parquet").to_pandas()
    assert pred["mode"].value_counts().to_dict() == {"direct": 10, "thinking": 3}
    assert all(len(r) == 10 and set(r) <= catalogue for r in pred["ranked_sids"])
    think = pred[pred["mode"] == "thinking"]
    assert think["reasoning"].notna().all() and (think["reasoning_tokens"] == 6).all() and think["forced_close"].all()
    bon = pq.read_table(art.path / "best_of_n.parquet").to_pandas()
    assert len(bon) == 4 and sorted(bon["trace"]) == [0, 0, 1, 1]
    # the reported metrics are recomputed from the predictions table
    hits = (pred[pred["mode"] == "direct"]["rank"].between(0, 9)).mean()
    assert m["direct_recall_10"] == pytest.approx(hits)
    md = open(outs["report"].path).read()
    assert "| popularity | 10 | 0 |" in md and "model (direct)" in md and "Best-of-N" in md
    assert "closed </think> itself in 0% of traces (forced close 100%)" in md
    assert open(outs["report_html"].path).read().count("data:image/png;base64,") == 3


def test_report_examples_read_as_items(sample_dataset, eval_sids, eval_model_dir, tmp_path):
    """Examples show titles beside SIDs for history, target and recommendations, and say where the
    target landed in words, never as rank -1."""
    from sidreasoner_core.dataset import read_items, read_samples
    from sidreasoner_core.evaluation.config import EvaluateConfig
    from sidreasoner_core.evaluation.stage import run

    cfg = EvaluateConfig(max_samples=3, thinking_samples=0, num_beams=10)
    art = run(cfg, sample_dataset, eval_sids, str(eval_model_dir), None, tmp_path / "ev", progress=False)
    md = (art.path / "report.md").read_text()
    examples = md.split("## Examples", 1)[1]
    titles = dict(zip(*[read_items(sample_dataset.path)[c] for c in ("item_id", "title")]))
    first = read_samples(sample_dataset.path, "test").iloc[0]
    assert titles[first["target"]] in examples and titles[first["history"][-1]] in examples
    pred = pq.read_table(art.path / "predictions.parquet").to_pandas()
    for rank in pred["rank"][:3]:
        assert (f"rank {rank + 1}" if rank >= 0 else "not in the top 10") in examples
    assert "rank -1" not in md and "rank 0" not in examples


def test_cli_evaluate_with_reference_sids_and_a_plain_model_ref(sample_dataset, tmp_path):
    """No sids artifact: the dataset's reference SIDs (3 of them shared) and an un-aligned model."""
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app

    cfg = json.dumps({"evaluate": {**EVAL, "thinking_samples": 0, "best_of_n": 0, "max_samples": 4}})
    res = CliRunner().invoke(app, ["evaluate", "--dataset", str(sample_dataset.path), "--model", "tiny-qwen3",
                                   "--out", str(tmp_path / "ev"), "--config", cfg, "--add-missing-sid-tokens"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.split("report:")[0])["direct_n"] == 4
    assert "share a SID" in (tmp_path / "ev" / "report.md").read_text()


def test_bad_inputs_name_the_problem(sample_dataset, eval_sids, eval_model_dir, baselines_art, tmp_path):
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app
    from sidreasoner_core.evaluation.config import EvaluateConfig
    from sidreasoner_core.evaluation.errors import EvaluationError
    from sidreasoner_core.evaluation.stage import run

    sid_map = dict(zip(*[pq.read_table(eval_sids.path / "sids.parquet").column(c).to_pylist() for c in ("item_id", "sid")]))
    target = pq.read_table(sample_dataset.path / "samples.parquet").to_pandas().query("split == 'test'")["target"].iloc[0]
    partial = write_sids({k: v for k, v in sid_map.items() if k != target}, tmp_path / "partial")
    cfg = EvaluateConfig(max_samples=2, thinking_samples=0)
    with pytest.raises(EvaluationError, match=f"item '{target}' has no SID"):
        run(cfg, sample_dataset, partial, str(eval_model_dir), None, tmp_path / "x", progress=False)
    res = CliRunner().invoke(app, ["evaluate", "--dataset", str(sample_dataset.path), "--model", "tiny-qwen3",
                                   "--out", str(tmp_path / "y"), "--sids", str(eval_sids.path)])
    assert res.exit_code == 2 and "no token <a_" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--dataset", str(sample_dataset.path), "--model", str(eval_model_dir),
                                   "--out", str(tmp_path / "z"), "--config", json.dumps({"evaluate": {"ks": [1, 20]}})])
    assert res.exit_code == 2 and "num_beams" in res.output


def test_steps_log_metrics_curve_and_report_to_mlflow(sample_dataset, eval_sids, eval_model_dir, baselines_art, tmp_path):
    import mlflow

    from sidreasoner_core.evaluation.stage import step

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = json.dumps({"evaluate": {**EVAL, "max_samples": 3, "thinking_samples": 0, "best_of_n_samples": 1}})
    metrics = step(cfg, str(sample_dataset.path), str(eval_sids.path), str(eval_model_dir), str(baselines_art.path),
                   str(tmp_path / "ev"), tracking_uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(["0"])
    assert run.data.params["num_beams"] == "10" and run.data.metrics["direct_n"] == metrics["direct_n"] == 3
    assert [m.step for m in client.get_metric_history(run.info.run_id, "best_of_n_recall_10")] == [1, 2]
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/report.md", "evaluation/metrics.json"} <= logged
    sources = " ".join(i.dataset.source for i in run.inputs.dataset_inputs)
    assert all(str(a.path) in sources for a in (sample_dataset, eval_sids, baselines_art))


def test_report_examples_show_a_hit_beside_the_misses():
    from sidreasoner_core.evaluation.stage import pick_examples

    rows = [{"mode": "direct", "sample": i, "rank": 0} for i in range(3)]
    rows += [{"mode": "thinking", "sample": i, "rank": r} for i, r in enumerate([-1, -1, -1, 4, 0, -1])]
    assert [(r["sample"], r["rank"]) for r in pick_examples(rows)] == [(0, -1), (1, -1), (3, 4)]
    assert [r["sample"] for r in pick_examples([r for r in rows if r["rank"] < 0])] == [0, 1, 2]
    assert [r["mode"] for r in pick_examples(rows[:3])] == ["direct"] * 3


def test_evaluation_names_the_model_by_its_verified_digest(tmp_path, tiny_model_dir):
    """The promotion gate takes the evaluation's rankings only for the weights it scored: the model parent
    carries the artifact's digest when the artifact verifies, and none when its files no longer match."""
    import shutil

    from sidreasoner_core.artifacts import open_artifact, write_artifact
    from sidreasoner_core.evaluation.load import resolve_model

    with write_artifact(tmp_path / "m", kind="model") as d:
        shutil.copytree(tiny_model_dir, d / "model")
    path, ref = resolve_model(str(tmp_path / "m"))
    assert path == tmp_path / "m" / "model"
    assert ref == open_artifact(tmp_path / "m").ref() and ref["kind"] == "model" and ref["digest"]
    (tmp_path / "m" / "model" / "extra.bin").write_bytes(b"other weights")  # no longer the manifest's files
    path, ref = resolve_model(str(tmp_path / "m"))
    assert path == tmp_path / "m" / "model" and "digest" not in ref
