"""The whole pipeline through kfp.local (SubprocessRunner) on the shipped sample, with the
smoke preset (tiny random Qwen3, minimal budgets): every stage runs, every artifact verifies,
MLflow holds the parent run, one nested run per stage and the registered model. With KFP's local
cache on: an identical second run reuses every cacheable step, a changed input file reruns data
and everything after it (issue 15: cache keys that hit, and are safe)."""
import json
import math
import shutil
from pathlib import Path

import mlflow
import pytest

from sidreasoner_core.artifacts import open_artifact

STAGES = {"data", "sids", "enrich", "align", "coldstart", "grpo", "baselines", "evaluate"}


CACHEABLE_OUTPUTS = {"data-op/dataset", "sids-op/sids", "enrich-op/corpus", "align-op/aligned_model",
                     "coldstart-op/model", "grpo-op/model", "baselines-op/baselines", "evaluate-op/evaluation",
                     "package-op/served_model"}


@pytest.fixture(scope="module")
def input_copy(tmp_path_factory):
    from pipelines.local import SAMPLE_DATA

    data = tmp_path_factory.mktemp("input") / SAMPLE_DATA.name
    shutil.copytree(SAMPLE_DATA, data)
    return data


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, input_copy):
    from pipelines.local import run_local

    out = tmp_path_factory.mktemp("runs")
    return run_local(data_uri=input_copy, config="smoke", out_dir=out, cache=True)


@pytest.fixture(scope="module")
def reruns(local_run, input_copy):
    """A second identical run, then a run after one line of the input's test.csv was removed (other
    experiment and model names: the promotion gate and MLflow only, which are never cached)."""
    from pipelines.local import run_local

    out = Path(local_run["run_dir"]).parent
    names = dict(experiment="sidreasoner-rerun", model_name="sidreasoner-rerun")
    same = run_local(data_uri=input_copy, config="smoke", out_dir=out, cache=True, **names)
    test_csv = input_copy / "test.csv"
    test_csv.write_text("".join(test_csv.read_text().splitlines(keepends=True)[:-1]))
    changed = run_local(data_uri=input_copy, config="smoke", out_dir=out, cache=True, **names)
    client = mlflow.MlflowClient(tracking_uri=same["tracking_uri"])
    exp = client.get_experiment_by_name("sidreasoner-rerun")

    def stages(run):
        parent = next(r for r in client.search_runs([exp.experiment_id])
                      if r.data.tags.get("kfp.run_id") == run["run_id"] and "mlflow.parentRunId" not in r.data.tags)
        nested = client.search_runs([exp.experiment_id],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        return parent, {r.data.tags["sidreasoner.stage"] for r in nested}

    return {"same": same, "changed": changed, "same_mlflow": stages(same), "changed_mlflow": stages(changed)}


def _artifact(run, task_output):
    return open_artifact(run["artifacts"][task_output]["path"])


def test_every_stage_publishes_a_verified_artifact(local_run):
    kinds = {k: v["kind"] for k, v in local_run["artifacts"].items()}
    assert kinds == {"data-op/dataset": "dataset", "sids-op/sids": "sids", "enrich-op/corpus": "corpus",
                     "align-op/aligned_model": "model", "coldstart-op/model": "model", "grpo-op/model": "model",
                     "baselines-op/baselines": "baselines", "evaluate-op/evaluation": "evaluation",
                     "package-op/served_model": "mlflow_model"}
    dataset = _artifact(local_run, "data-op/dataset")
    assert dataset.manifest["stats"]["samples"] == {"train": 249, "valid": 103, "test": 123}
    # lineage inside the artifacts: each model names the model it was trained from
    grpo, coldstart = _artifact(local_run, "grpo-op/model"), _artifact(local_run, "coldstart-op/model")
    assert coldstart.uri in [p["uri"] for p in grpo.manifest["parents"]]
    summary = json.loads((Path(local_run["run_dir"]) / "summary.json").read_text())
    assert summary["artifacts"] == local_run["artifacts"]
    assert any(r.endswith("report.md") for r in local_run["reports"])


def test_evaluation_ranks_only_catalogue_items(local_run):
    evaluation = _artifact(local_run, "evaluate-op/evaluation")
    metrics = json.loads((evaluation.path / "metrics.json").read_text())
    assert metrics["direct"]["n"] == 16 and metrics["direct"]["invalid"] == 0
    assert metrics["thinking"]["invalid"] == 0
    import pyarrow.parquet as pq

    preds = pq.read_table(evaluation.path / "predictions.parquet").to_pandas()
    catalogue = set(pq.read_table(_artifact(local_run, "sids-op/sids").path / "sids.parquet").column("sid").to_pylist())
    assert len(preds) == 16 + 4
    assert all(len(r) == 10 and set(r) <= catalogue for r in preds["ranked_sids"])


def test_mlflow_parent_nested_runs_and_registered_model(local_run):
    client = mlflow.MlflowClient(tracking_uri=local_run["tracking_uri"])
    exp = client.get_experiment_by_name("sidreasoner")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["kfp.run_id"]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    stages = {r.data.tags["sidreasoner.stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(stages) == STAGES
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in stages.values())
    assert stages["data"].data.metrics["items"] == 400
    assert stages["align"].data.params  # the stage config as params
    version = client.get_model_version_by_alias("sidreasoner", "candidate")
    assert version.run_id == parent.info.run_id
    # registered where the package step wrote it: the MLflow model directory, not a copy
    assert version.source == local_run["artifacts"]["package-op/served_model"]["path"]
    assert Path(version.source, "MLmodel").exists()
    # the first model of a registry becomes champion
    assert client.get_model_version_by_alias("sidreasoner", "champion").version == version.version
    assert version.tags["promotion.decision"] == "promoted" and parent.data.tags["promotion.reason"]


def test_quality_bench_reads_a_finished_run(local_run):
    """bench/quality.py --from-runs: the run's own figures, plus the aligned model scored beside it."""
    from conftest import load_bench

    bench = load_bench("quality")
    figs = bench.run_figures(Path(local_run["run_dir"]), batch_size=8)
    assert set(figs) >= {"model (direct)", "model (thinking)", "aligned only (direct)", "SASRec", "most-popular",
                         "cold-start only (thinking)", "best-of-N before RL"}
    cold = json.loads((Path(local_run["run_dir"]) / "coldstart_eval" / "metrics.json").read_text())
    assert "direct" not in cold and len(cold["best_of_n_curve"]) == len(figs["best-of-N before RL"]) == 16
    assert 0 <= figs["cold-start only (thinking)"]["self_closed"] <= 1
    grpo = _artifact(local_run, "grpo-op/model").manifest["metrics"]  # the smoke preset publishes the last step
    assert figs["GRPO policy"] == {"published_step": grpo["train_steps"], "train_steps": grpo["train_steps"]}
    paired = figs.get(bench.BOOTSTRAP, {})  # the RL gain on the same test samples, with its interval
    gain = "thinking after RL / cold-start thinking (RL gain)"  # both on the same thinking samples
    if figs["cold-start only (thinking)"]["recall@10"]:
        assert paired[gain] == pytest.approx(figs["model (thinking)"]["recall@10"]
                                             / figs["cold-start only (thinking)"]["recall@10"])
        assert paired[f"{gain} low"] <= paired[gain] <= paired[f"{gain} high"]
    else:  # no ratio to a zero R@10
        assert gain not in paired
    assert all(math.isfinite(v) for v in paired.values())
    spread = figs["guesses after RL"]
    assert 0 < spread["top_guess_share"] <= 1 and spread["distinct_guesses"] >= 1
    metrics = json.loads((_artifact(local_run, "evaluate-op/evaluation").path / "metrics.json").read_text())
    assert figs["SASRec"]["recall@10"] == metrics["sasrec"]["recall@10"]
    aligned = json.loads((Path(local_run["run_dir"]) / "aligned_eval" / "metrics.json").read_text())["direct"]
    assert aligned["n"] == 123 and aligned["invalid"] == 0  # the whole test split of the sample
    other = {name: {f: v + 0.01 for f, v in m.items()} for name, m in figs.items()}  # a second "seed"
    figs, other = ({k: v for k, v in f.items() if not k.startswith("best-of-N")} for f in (figs, other))
    summary = bench.summarise([figs, other])
    assert summary["n"] == 2
    mean, half = summary["table"]["SASRec"]["recall@10"]
    assert mean == pytest.approx(figs["SASRec"]["recall@10"] + 0.005) and half == pytest.approx(12.706 * 0.005)
    ratios = summary["ratio_r10_vs_sasrec"]["model (direct)"]["per_seed"]
    assert ratios[-1] == pytest.approx(other["model (direct)"]["recall@10"] / other["SASRec"]["recall@10"], abs=1e-3)


def test_quality_bench_measures_how_spread_the_guesses_are(tmp_path):
    """Greedy traces collapsing onto one closing sentence: its share, and R@10 of both modes there."""
    import pandas as pd
    from conftest import load_bench

    traces = ["From a to b. Next: a tape by 3M.", "Steady on c. Next: a tape by 3M.", "From d to e. Next: gloves."]
    rows = [{"mode": "thinking", "sample": i, "rank": r, "reasoning": t} for i, (t, r) in enumerate(zip(traces, [0, -1, 3]))]
    rows += [{"mode": "direct", "sample": i, "rank": r, "reasoning": None} for i, r in enumerate([12, 9, -1])]
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    spread = load_bench("quality").guess_spread(tmp_path / "p.parquet")
    assert spread == {"top_guess_share": pytest.approx(2 / 3), "distinct_guesses": 2.0,
                      "recall@10 thinking, top guess": 0.5, "recall@10 direct, top guess": 0.5}


def test_quality_bench_pairs_two_models_on_the_same_test_samples(tmp_path):
    """The RL gain's interval within one run: both models' hits resampled together, sample by sample."""
    import pandas as pd
    from conftest import load_bench

    bench = load_bench("quality")
    ranks = {"before": [0, -1, 3, -1, 12, 5, -1, -1] * 25, "after": [0, 2, 3, -1, 12, 5, -1, 9] * 25}
    for name, r in ranks.items():
        rows = [{"mode": "thinking", "sample": i, "rank": k} for i, k in enumerate(r)]
        pd.DataFrame(rows).to_parquet(tmp_path / f"{name}.parquet")
    before, after = (bench.sample_hits(tmp_path / f"{n}.parquet", "thinking") for n in ranks)
    assert before.sum() == 75 and after.sum() == 125  # rank 12 and -1 are misses
    ratio, lo, hi = bench.paired_bootstrap(after, before)
    assert ratio == pytest.approx(125 / 75) and 1 < lo < ratio < hi  # every resample gains: after ⊇ before
    assert bench.paired_bootstrap(before, before) == (1.0, 1.0, 1.0)
    assert bench.paired_bootstrap(after, before.iloc[4:5]) is None  # no hit on the one shared sample
    pd.DataFrame([{"mode": "thinking", "sample": 0, "rank": 1}] * 2).to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(ValueError, match="twice.parquet: several thinking rows per sample"):
        bench.sample_hits(tmp_path / "twice.parquet", "thinking")


def test_quality_bench_trains_a_runs_cold_started_model_again(local_run):
    """bench/quality.py --grpo-again: the run's cold-started model through GRPO with other settings and
    the run's seed, scored with the run's evaluate settings; it replaces the run's model after RL."""
    from conftest import load_bench

    from sidreasoner_core.config import load_mapping

    bench, run_dir = load_bench("quality"), Path(local_run["run_dir"])
    grpo = {**load_mapping("smoke")["grpo"], "max_steps": 1, "learning_rate": 1e-4}
    figs = bench.run_figures(run_dir, batch_size=8, grpo=grpo)
    (again,) = run_dir.glob("grpo_again_*")
    trained = json.loads((again / "model" / "manifest.json").read_text())
    own = json.loads((_artifact(local_run, "grpo-op/model").path / "manifest.json").read_text())
    assert trained["config"]["learning_rate"] == 1e-4 and trained["config"]["seed"] == own["config"]["seed"]
    assert Path(trained["parents"][0]["uri"]).resolve() == _artifact(local_run, "coldstart-op/model").path.resolve()
    scored = json.loads((again / "eval" / "metrics.json").read_text())
    assert figs["model (thinking)"]["recall@10"] == scored["thinking"]["recall@10"]
    assert figs["model (direct)"]["recall@10"] == scored["direct"]["recall@10"]
    assert figs["GRPO policy"] == {"published_step": 1, "train_steps": 1}
    metrics = json.loads((_artifact(local_run, "evaluate-op/evaluation").path / "metrics.json").read_text())
    assert figs["SASRec"]["recall@10"] == metrics["sasrec"]["recall@10"]  # the baselines stay the run's
    assert bench.run_figures(run_dir, batch_size=8, grpo=grpo) == figs   # cached: read back, not trained again


def test_identical_rerun_reuses_every_cacheable_step(reruns):
    same = reruns["same"]
    assert not set(same["artifacts"]) & CACHEABLE_OUTPUTS  # nothing cacheable ran: no new artifact
    parent, stages = reruns["same_mlflow"]
    assert stages == set()  # no stage ran, so none opened a nested run
    assert parent.info.status == "FINISHED"  # the gate (uncached) ran on the cached model and closed it
    assert parent.data.tags["promotion.decision"]


def test_changed_input_file_reruns_data_and_everything_after(reruns):
    changed = reruns["changed"]
    assert set(changed["artifacts"]) == CACHEABLE_OUTPUTS  # every stage ran again
    dataset = open_artifact(changed["artifacts"]["data-op/dataset"]["path"])
    assert dataset.manifest["stats"]["samples"]["test"] == 122  # from the new file, not the cache
    parent, stages = reruns["changed_mlflow"]
    assert stages == STAGES and parent.info.status == "FINISHED"
