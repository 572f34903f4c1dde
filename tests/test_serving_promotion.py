"""The promotion gate, end to end against a real MLflow server:

1. the smoke pipeline runs with an alignment that learns the next-SID task: the first model
   becomes `champion` (no champion yet);
2. it runs again made worse on purpose (the alignment's learning rate is ~0, so the model stays
   at its random start): the new version stays `candidate`, with the figures and the reason as
   tags on the version and the parent run, and as the gate's Markdown output.
`test_serving_http.py` serves a registered champion over HTTP.
"""
from __future__ import annotations

import copy
import uuid
from pathlib import Path

import mlflow
import pytest

from mlflow_server import mlflow_server  # noqa: F401

# Alignment on task 5 only (history of SIDs -> next SID, paper §3.2.2) over the sample's reference SIDs,
# enough steps for the tiny model to learn which SIDs come next (recall@10 ~0.2 on the test split,
# near most-popular); cold-start and GRPO off: the gate, not the recipe, is under test.
ALIGN_STEPS, ALIGN_LR = 80, 1e-2
OTHER_TASKS = ("title_to_sid", "sid_to_title", "sid_history_to_title", "title_history_to_title",
               "title_history_to_sid", "item_text", "user_narrative", "gsm8k")


def gate_config(learning_rate: float) -> dict:
    from sidreasoner_core.config import load_mapping

    cfg = copy.deepcopy(load_mapping("smoke"))
    cfg["align"].update({"task_ratios": {"sid_history_to_sid": 1.0, **{t: 0.0 for t in OTHER_TASKS}},
                         "max_per_task": None, "gsm8k_eval_n": 0, "eval_tasks": ["sid_history_to_sid"]})
    cfg["align"]["train"].update({"max_steps": ALIGN_STEPS, "learning_rate": learning_rate,
                                  "per_device_train_batch_size": 16, "eval_strategy": "no",
                                  "early_stopping_patience": None})
    cfg["sids"] = {"from_index": True}
    # evaluation ranks every test sample in direct mode with the served batch size: the gate takes its rankings
    cfg["evaluate"].update({"max_samples": 0, "batch_size": 32})
    cfg["coldstart"]["enabled"] = False
    cfg["grpo"]["enabled"] = False
    return cfg


@pytest.fixture(scope="module")
def gate(mlflow_server, tmp_path_factory):  # noqa: F811
    from pipelines.local import run_local

    name, experiment = f"sidreasoner-gate-{uuid.uuid4().hex[:6]}", f"gate-{uuid.uuid4().hex[:8]}"
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    runs, after_first = [], None
    for i, lr in enumerate((ALIGN_LR, 1e-12)):   # the second run is made worse on purpose
        runs.append(run_local(config=gate_config(lr), out_dir=tmp_path_factory.mktemp(f"run{i}"),
                              tracking_uri=mlflow_server.url, experiment=experiment, model_name=name))
        if i == 0:
            after_first = client.get_model_version_by_alias(name, "champion")
    return {"name": name, "client": client, "runs": runs, "after_first": after_first}


def _parent(client, version):
    return client.get_run(version.run_id)


def test_first_run_becomes_champion(gate):
    client, name = gate["client"], gate["name"]
    first = gate["after_first"]
    assert first.version == "1"
    assert first.tags["promotion.decision"] == "promoted"
    assert first.tags["promotion.champion"] == "none" and "no champion yet" in first.tags["promotion.reason"]
    assert float(first.tags["promotion.candidate"]) > 0.05   # the aligned model learned the task
    assert first.tags["promotion.candidate_from"] == "the evaluation step's rankings"
    parent = _parent(client, first)
    assert parent.data.tags["promotion.decision"] == "promoted" and parent.info.status == "FINISHED"
    assert client.get_model_version_by_alias(name, "champion").version == "1"   # still, after run 2


def test_worse_second_run_stays_candidate_with_the_reason_in_mlflow(gate):
    client, name = gate["client"], gate["name"]
    second = client.get_model_version_by_alias(name, "candidate")
    assert second.version == "2"
    tags = second.tags
    assert tags["promotion.decision"] == "kept as candidate"
    assert tags["promotion.champion_version"] == "1"
    cand, champ = float(tags["promotion.candidate"]), float(tags["promotion.champion"])
    assert cand < champ, tags   # really worse, not a tie
    # the champion was re-scored on this run's split with the same code: the same figure as when it was promoted
    assert champ == pytest.approx(float(gate["after_first"].tags["promotion.candidate"]), abs=1e-4)
    assert tags["promotion.champion_from"] == "the figures recorded when it was scored on these samples"
    assert f"does not beat champion v1's {champ:.4f}" in tags["promotion.reason"]
    parent = _parent(client, second)
    assert parent.data.tags["promotion.reason"] == tags["promotion.reason"]
    assert parent.data.metrics["promotion_candidate_recall_10"] == pytest.approx(cand, abs=1e-4)
    assert parent.data.metrics["promotion_sasrec_recall_10"] > 0
    # the KFP UI shows the decision as Markdown
    md = Path(gate["runs"][1]["pipeline_root"]).rglob("promote-op/decision")
    text = next(md).read_text()
    assert "Promotion gate: kept as candidate" in text and tags["promotion.reason"] in text
    assert "| SASRec |" in text


def test_registered_source_is_the_packaged_mlflow_model(gate, tmp_path):
    client, name = gate["client"], gate["name"]
    version = client.get_model_version(name, "2")
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path),
                                                tracking_uri=client.tracking_uri)
    assert (Path(local) / "MLmodel").exists() and (Path(local) / "artifacts" / "bundle" / "catalogue.parquet").exists()


def _outputs(run: dict) -> dict:
    from sidreasoner_core.artifacts import open_artifact

    root = Path(run["pipeline_root"])
    return {name: open_artifact(next(root.rglob(rel))) for name, rel in
            (("package", "package-op/served_model"), ("dataset", "data-op/dataset"), ("evaluation", "evaluate-op/evaluation"))}


def test_figures_the_gate_takes_are_the_ones_it_would_measure(gate):
    """The candidate's figures (from the evaluation step's rankings) and the champion's (recorded on its
    version) equal what the gate measures by ranking each packaged model itself."""
    import json

    from sidreasoner_core.dataset import read_samples
    from sidreasoner_core.promotion import PromoteConfig, load_champion, score, scored_on
    from sidreasoner_core.serving.pyfunc import BUNDLE
    from sidreasoner_core.serving.recommender import Recommender

    client, name = gate["client"], gate["name"]
    config, ks = PromoteConfig(), [1, 5, 10]
    for version, run in (("1", gate["runs"][0]), ("2", gate["runs"][1])):
        out = _outputs(run)
        samples = read_samples(out["dataset"].path, config.split)
        measured = score(Recommender.load(out["package"].path / "artifacts" / BUNDLE), samples, config, ks)
        recorded = json.loads(client.get_model_version(name, version).tags["promotion.figures"])
        assert recorded == pytest.approx({k: v for k, v in measured.items() if "@" in k}, abs=1e-9), version
    # another scoring (here: other samples) finds no recorded figures: the champion is downloaded to be ranked
    other = scored_on(out["dataset"].manifest["digest"], config, len(samples) - 1, 10)
    found_version, recommender, figures = load_champion(client.tracking_uri, name, "champion", other)
    assert found_version.version == "1" and figures is None and recommender is not None


def test_the_candidate_is_ranked_again_when_the_evaluation_differs(gate):
    from sidreasoner_core.dataset import read_samples
    from sidreasoner_core.promotion import PromoteConfig, evaluation_ranking

    out = _outputs(gate["runs"][0])
    n = len(read_samples(out["dataset"].path, "test"))
    args = out["evaluation"], out["package"], out["dataset"]
    assert len(evaluation_ranking(*args, PromoteConfig(), n, 10)) == n
    assert evaluation_ranking(*args, PromoteConfig(), n + 1, 10) is None            # more samples than it ranked
    assert evaluation_ranking(*args, PromoteConfig(num_beams=20), n, 20) is None     # other beams
    assert evaluation_ranking(*args, PromoteConfig(split="valid"), n, 10) is None    # other split
    assert evaluation_ranking(*args, PromoteConfig(mode="thinking"), n, 10) is None  # thinking mode
    other = _outputs(gate["runs"][1])                                                 # other weights
    assert evaluation_ranking(other["evaluation"], out["package"], out["dataset"], PromoteConfig(), n, 10) is None
