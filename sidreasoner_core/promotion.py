"""The promotion gate, the pipeline's last step: the new model (candidate) and the current
`champion` are scored on the same split with the same code; the candidate is registered and the
`champion` alias moves to it only when it wins by the configured margin. Decision, figures and
reason go to MLflow (tags on the model version and the parent run) and to a Markdown report.

Scoring is evaluation's: constrained beam search over each model's own catalogue trie (paper
§4.1.1) and Recall/NDCG at SID level (an item sharing a SID counts as that SID). A retrained model
may have other SIDs and another catalogue than the champion, so each model maps the split's item
ids through its own catalogue; history items a model does not know are left out of its prompt and
a target it does not know is a miss. SASRec's figure comes from the baselines artifact, on the
same samples.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator

from .config import StageConfig

log = logging.getLogger(__name__)

KIND = "promotion"
NOT_IN_CATALOGUE = "<not in catalogue>"
# A registered version's figures and what they were measured on, so a later gate on the same samples
# takes them instead of downloading and ranking the champion again.
FIGURES_TAG, SCORED_ON_TAG = "promotion.figures", "promotion.scored_on"


class PromoteConfig(StageConfig):
    metric: str = Field("recall@10", description="recall@K or ndcg@K the models are compared on (K <= num_beams)")
    margin: float = Field(0.005, ge=0, description="champion moves when candidate - champion > margin (absolute)")
    split: Literal["valid", "test"] = "test"
    max_samples: int = Field(0, ge=0, description="score the first N samples of the split (0 = all)")
    mode: Literal["direct", "thinking"] = "direct"
    num_beams: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    require_beat_sasrec: bool = Field(False, description="also require the candidate to beat SASRec")
    champion_alias: str = "champion"
    device: str = Field("auto", description="where the gate ranks a model it must rank: auto | cpu | cuda | cuda:N "
                        "(cluster: cuda; a 1.7B model ranking a test split on the gate's CPUs would take hours)")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not re.fullmatch(r"(recall|ndcg)@[1-9]\d*", v):
            raise ValueError(f"metric must be recall@K or ndcg@K, got {v!r}")
        return v


@dataclass
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate: dict
    champion: dict | None = None
    champion_version: str | None = None
    sasrec: dict | None = None
    margin: float = 0.0
    samples: int = 0
    version: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "kept as candidate"

    def tags(self) -> dict[str, str]:
        fig = lambda m: "none" if m is None else f"{m[self.metric]:.4f}"  # noqa: E731
        return {"promotion.decision": self.label, "promotion.reason": self.reason, "promotion.metric": self.metric,
                "promotion.candidate": fig(self.candidate), "promotion.champion": fig(self.champion),
                "promotion.champion_version": self.champion_version or "none", "promotion.sasrec": fig(self.sasrec),
                "promotion.margin": str(self.margin), "promotion.samples": str(self.samples),
                **{f"promotion.{k}": str(v) for k, v in self.extra.items() if v}}

    def markdown(self) -> str:
        k = self.metric.split("@")[1]
        rows = [("candidate" + (f" (v{self.version})" if self.version else ""), self.candidate),
                (f"champion (v{self.champion_version})" if self.champion else "champion (none yet)", self.champion),
                ("SASRec", self.sasrec)]
        lines = [f"# Promotion gate: {self.label}", "", f"**Reason:** {self.reason}", "",
                 f"Scored on {self.samples} samples, margin {self.margin} on {self.metric}.", "",
                 f"| model | recall@{k} | ndcg@{k} |", "|---|---|---|"]
        for name, m in rows:
            cells = ["n/a", "n/a"] if m is None else [f"{m[f'recall@{k}']:.4f}", f"{m[f'ndcg@{k}']:.4f}"]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        sources = [f"{who.split('_')[0]}: {how}" for who, how in self.extra.items() if how]
        if sources:
            lines += ["", "Figures: " + "; ".join(sources) + "."]
        return "\n".join(lines) + "\n"


def decide(config: PromoteConfig, candidate: dict, champion: dict | None, sasrec: dict | None,
           champion_version: str | None = None) -> tuple[bool, str]:
    metric, margin = config.metric, config.margin
    cand = candidate[metric]
    if config.require_beat_sasrec and sasrec is not None and cand <= sasrec[metric]:
        return False, f"candidate {metric} {cand:.4f} does not beat SASRec's {sasrec[metric]:.4f}"
    if champion is None:
        return True, f"no champion yet: the candidate ({metric} {cand:.4f}) becomes champion"
    champ = champion[metric]
    diff = cand - champ
    if diff > margin:
        return True, (f"candidate {metric} {cand:.4f} beats champion v{champion_version}'s {champ:.4f} by "
                      f"{diff:.4f} > margin {margin}")
    return False, (f"candidate {metric} {cand:.4f} does not beat champion v{champion_version}'s {champ:.4f} "
                   f"by more than the margin {margin} (difference {diff:+.4f})")


# ----------------------------------------------------------------------------- scoring

def score(recommender, samples, config: PromoteConfig, ks=None, desc: str = "model") -> dict:
    """Recall/NDCG@K of a Recommender on `samples` (history, target), at SID level (see module doc)."""
    ks = ks or sorted({1, 5, 10, int(config.metric.split("@")[1])})
    known = recommender.sid_by_item
    histories = [[h for h in hist if h in known] for hist in samples["history"]]
    keep = [i for i, h in enumerate(histories) if h]
    ranked = [[] for _ in histories]
    if keep:
        got, _ = recommender.rank([histories[i] for i in keep], max(config.num_beams, max(ks)), config.mode,
                                  progress=True)
        for i, r in zip(keep, got):
            ranked[i] = [s for s, _ in r]
    return figures(ranked, samples, known, set(recommender.items_of_sid), ks, desc)


def figures(ranked: list[list[str]], samples, sid_by_item: dict, valid: set, ks, desc: str) -> dict:
    """The gate's figures from each sample's ranked SIDs (the targets mapped through the model's catalogue)."""
    from .metrics import rank_metrics

    targets = [sid_by_item.get(t, NOT_IN_CATALOGUE) for t in samples["target"]]
    out = rank_metrics(ranked, targets, ks, valid=valid)
    out["unknown_targets"] = float(sum(t == NOT_IN_CATALOGUE for t in targets))
    out["unknown_history_items"] = float(sum(h not in sid_by_item for hist in samples["history"] for h in hist))
    log.info("promotion: %s %s", desc, {k: round(v, 4) for k, v in out.items()})
    return out


# ----------------------------------------------------------------------------- figures measured before
# Ranking 4,533 test samples with 10 beams is the gate's whole cost (about 30 s a model on 2 CPU cores for
# `make run`'s model, hours for a 1.7B model on the gate's CPU pod): a figure already measured on the same
# weights, samples and decoding is taken, not measured again.

# Bump when the gate's scoring changes, so figures recorded by an older gate are measured again.
SCORING_VERSION = 2  # 2: direct mode ranks from prompts.direct_prompt (serving's prompt until then was bare)


def scored_on(dataset_digest: str, config: PromoteConfig, n: int, beams: int) -> str:
    """What a recorded champion figure holds for: scoring code, dataset, split, samples, mode and beams."""
    return f"v{SCORING_VERSION}:{dataset_digest}:{config.split}:{n}:{config.mode}:{beams}"


def evaluation_ranking(evaluation, package, dataset, config: PromoteConfig, n: int, beams: int) -> list | None:
    """The candidate's ranked SIDs on the first `n` samples as the evaluation step found them, when that step
    ranked the same weights over the same catalogue and samples in direct mode with the served decoding
    (beams, batch size, dtype): the figures are then the gate's own (the device may differ, which can only
    swap near-ties). None, with the reason in the log, when anything differs."""
    import pyarrow.parquet as pq

    from .evaluation.score import PREDICTIONS_FILE

    ev, served = evaluation.manifest.get("config", {}), package.manifest.get("config", {})
    parents = lambda art: {p.get("kind"): p.get("digest") for p in art.manifest.get("parents", [])}  # noqa: E731
    ev_in, pkg_in = parents(evaluation), parents(package)
    checks = ((config.mode == "direct", f"the gate scores {config.mode} mode"),
              (bool(ev.get("direct")), "the evaluation did not rank in direct mode"),
              (ev.get("split") == config.split, f"the evaluation ranked split {ev.get('split')!r}"),
              (ev.get("num_beams") == beams, f"the evaluation kept {ev.get('num_beams')} beams, the gate {beams}"),
              ((ev.get("batch_size"), ev.get("dtype")) == (served.get("batch_size"), served.get("dtype")),
               "the evaluation's batch size or dtype is not the served model's"),
              (all(ev_in.get(k) and ev_in.get(k) == pkg_in.get(k) for k in ("model", "sids")),
               "the evaluation ranked other weights or another catalogue"),
              (ev_in.get("dataset") == dataset.manifest["digest"], "the evaluation ranked another dataset"))
    why = next((reason for ok, reason in checks if not ok), None)
    if why is None:
        rows = pq.read_table(evaluation.path / PREDICTIONS_FILE, columns=["mode", "sample", "ranked_sids"]).to_pylist()
        ranked = {r["sample"]: r["ranked_sids"] for r in rows if r["mode"] == "direct"}
        if any(i not in ranked for i in range(n)):
            why = f"the evaluation ranked {len(ranked)} samples in direct mode, the gate scores {n}"
    if why:
        log.info("promotion: the candidate is ranked here (%s)", why)
        return None
    log.info("promotion: the candidate's rankings are the evaluation step's (%s)", evaluation.uri)
    return [list(ranked[i]) for i in range(n)]


def sasrec_metrics(baselines_dir, split: str, n: int, ks) -> dict | None:
    """SASRec's metrics on the first `n` samples of `split` from a baselines artifact (None if absent)."""
    import pyarrow.parquet as pq

    from .metrics import rank_metrics

    path = baselines_dir / "predictions.parquet"
    if not path.exists():
        return None
    df = pq.read_table(path).to_pandas()
    df = df[(df["baseline"] == "sasrec") & (df["split"] == split)].sort_values("sample").head(n)
    if df.empty:
        return None
    return rank_metrics([list(r) for r in df["ranked"]], list(df["target"]), ks)


def load_champion(tracking_uri: str, name: str, alias: str, scored: str | None = None):
    """(version, Recommender or None, figures or None) of `name@alias`, or None when there is no such model
    or alias. When the version records figures measured on `scored` (see `scored_on`), those come back and
    the model is not downloaded."""
    import json

    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    if scored and version.tags.get(SCORED_ON_TAG) == scored and version.tags.get(FIGURES_TAG):
        return version, None, json.loads(version.tags[FIGURES_TAG])
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, tracking_uri=tracking_uri)
    model = mlflow.pyfunc.load_model(local)
    return version, model.unwrap_python_model().recommender, None


# ----------------------------------------------------------------------------- the step

def step(config_json: str, package_uri: str, package_path: str, dataset_uri: str, evaluation_uri: str,
         baselines_uri: str, tracking_uri: str, parent_run_id: str, model_name: str,
         candidate_alias: str = "candidate") -> Decision:
    """Score, register, gate; headline metrics of the evaluation onto the parent run, which is closed.

    `package_uri` is where the packaged MLflow model lies (s3:// on a cluster), registered as is;
    `package_path` is the same artifact readable here.
    """
    import json

    import pyarrow.parquet as pq

    from .artifacts import open_artifact
    from .config import section
    from .dataset import KIND as DATASET_KIND
    from .dataset import read_samples
    from .evaluation.config import resolve_device
    from .evaluation.score import flat_metrics
    from .serving.package import KIND as PACKAGE_KIND
    from .serving.pyfunc import BUNDLE
    from .serving.recommender import CATALOGUE_FILE, Recommender

    config = PromoteConfig.build(section(config_json, "promote"), source="config_json [promote]")
    package = open_artifact(package_path, kind=PACKAGE_KIND)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    samples = read_samples(dataset.path, config.split)
    if config.max_samples:
        samples = samples.head(config.max_samples)
    if samples.empty:
        raise ValueError(f"{dataset.uri}: split {config.split!r} has no samples to score the candidate on")
    ks = sorted({1, 5, 10, int(config.metric.split("@")[1])})
    beams, n, device = max(config.num_beams, max(ks)), len(samples), resolve_device(config.device)
    bundle = package.path / "artifacts" / BUNDLE
    evaluation = open_artifact(evaluation_uri) if evaluation_uri else None
    ranked = evaluation_ranking(evaluation, package, dataset, config, n, beams) if evaluation else None
    if ranked is None:
        candidate = score(Recommender.load(bundle).to(device), samples, config, ks, "candidate")
        candidate_from = "ranked here"
    else:
        sid_by_item = dict(zip(*pq.read_table(bundle / CATALOGUE_FILE, columns=["item_id", "sid"]).to_pydict().values()))
        candidate = figures(ranked, samples, sid_by_item, set(sid_by_item.values()), ks, "candidate")
        candidate_from = "the evaluation step's rankings"
    sasrec = sasrec_metrics(open_artifact(baselines_uri).path, config.split, n, ks) if baselines_uri else None
    scored = scored_on(dataset.manifest["digest"], config, n, beams)
    champion = champion_version = champion_from = None
    if tracking_uri:
        found = load_champion(tracking_uri, model_name, config.champion_alias, scored)
        if found is not None:
            champion_version = str(found[0].version)
            if found[2] is not None:
                champion, champion_from = found[2], "the figures recorded when it was scored on these samples"
                log.info("promotion: champion v%s %s", champion_version, champion_from)
            else:
                champion = score(found[1].to(device), samples, config, ks, f"champion v{champion_version}")
                champion_from = "ranked here"
    promote, reason = decide(config, candidate, champion, sasrec, champion_version)
    decision = Decision(promote, reason, config.metric, candidate, champion, champion_version, sasrec,
                        config.margin, n, extra={"candidate_from": candidate_from, "champion_from": champion_from})
    if not (tracking_uri and parent_run_id):
        decision.reason += " (tracking off: nothing registered)"
        decision.promote = False
        return decision

    import mlflow

    from .registry import register_model

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for key, value in (flat_metrics(evaluation) if evaluation else {}).items():
        client.log_metric(parent_run_id, key, float(value))
    for who, m in (("candidate", candidate), ("champion", champion), ("sasrec", sasrec)):
        for key in (m or {}):
            if "@" in key:
                client.log_metric(parent_run_id, f"promotion_{who}_{key.replace('@', '_')}", float(m[key]))
    client.set_tag(parent_run_id, "output.mlflow_model.uri", package_uri)
    if evaluation:
        client.set_tag(parent_run_id, "output.evaluation.uri", evaluation.uri)
    registered = register_model(tracking_uri, parent_run_id, package_uri, model_name, alias=candidate_alias,
                                tags={"digest": package.manifest["digest"], **decision.tags(), SCORED_ON_TAG: scored,
                                      FIGURES_TAG: json.dumps({k: v for k, v in candidate.items() if "@" in k})})
    decision.version = str(registered["version"])
    if promote:
        client.set_registered_model_alias(model_name, config.champion_alias, decision.version)
    for key, value in {**decision.tags(), "promotion.version": decision.version}.items():
        client.set_tag(parent_run_id, key, value[:5000])
    client.log_text(parent_run_id, decision.markdown(), "promotion/decision.md")
    client.set_terminated(parent_run_id, "FINISHED")
    log.info("promotion: version %s %s: %s", decision.version, decision.label, reason)
    return decision
