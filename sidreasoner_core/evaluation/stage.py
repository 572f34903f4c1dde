"""Evaluation and baselines stages.

baselines: dataset -> artifact kind "baselines" (predictions.parquet: top-k lists of each
           baseline for every valid/test sample; metrics.json; sasrec.pt; sasrec_history.json)
evaluate:  dataset + sids + model (+ baselines) -> artifact kind "evaluation"
           (predictions.parquet, best_of_n.parquet, metrics.json, report.md, report.html, plots/)
Samples are identified by their position in the split (`sample`) so the evaluation can score
the baselines on exactly the samples it decoded.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..artifacts import Artifact, open_artifact, write_artifact
from ..data.schema import KIND as DATASET_KIND
from ..data.schema import read_items, read_samples
from ..sid import KIND as SIDS_KIND
from ..sid import SIDS_FILE, SIDError, parse_sid
from .config import BaselinesConfig, EvaluateConfig, resolve_device
from .metrics import best_of_n_curve, flat, rank_metrics, target_rank

log = logging.getLogger(__name__)

KIND = "evaluation"
BASELINES_KIND = "baselines"
PREDICTIONS_FILE = "predictions.parquet"
BEST_OF_N_FILE = "best_of_n.parquet"
METRICS_FILE = "metrics.json"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
SASREC_FILE, SASREC_HISTORY = "sasrec.pt", "sasrec_history.json"

BASELINE_SCHEMA = pa.schema([("baseline", pa.string()), ("split", pa.string()), ("sample", pa.int64()),
                             ("user_id", pa.string()), ("target", pa.string()), ("ranked", pa.list_(pa.string()))])
PREDICTION_SCHEMA = pa.schema([
    ("mode", pa.string()), ("sample", pa.int64()), ("trace", pa.int64()), ("user_id", pa.string()),
    ("target", pa.string()), ("target_sid", pa.string()), ("rank", pa.int64()),
    ("ranked_sids", pa.list_(pa.string())), ("ranked_items", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())), ("reasoning", pa.string()), ("reasoning_tokens", pa.int64()),
    ("forced_close", pa.bool_()),
])


class EvaluationError(ValueError):
    pass


# ----------------------------------------------------------------------------- baselines

def run_baselines(config: BaselinesConfig, dataset: Artifact, out: str | Path, progress: bool = True) -> Artifact:
    import torch

    from .baselines import sasrec
    from .baselines.popularity import most_popular

    if config.max_threads:
        torch.set_num_threads(config.max_threads)
    items = list(read_items(dataset.path)["item_id"])
    splits = {s: read_samples(dataset.path, s) for s in ("train", "valid", "test")}
    if splits["train"].empty:
        raise EvaluationError(f"{dataset.uri}: the train split is empty; baselines need training samples")
    rows, metrics, extra = [], {}, {}

    def add(name: str, ranked_by_split: dict[str, list[list[str]]]) -> None:
        for split, ranked in ranked_by_split.items():
            df = splits[split]
            for i, (u, t, r) in enumerate(zip(df["user_id"], df["target"], ranked)):
                rows.append({"baseline": name, "split": split, "sample": i, "user_id": u, "target": t, "ranked": r})
            metrics[f"{name}/{split}"] = rank_metrics(ranked, list(df["target"]), config.ks)

    if config.popularity:
        top = most_popular(splits["train"], config.top_k, items)
        add("popularity", {s: [top] * len(splits[s]) for s in ("valid", "test")})
    model = None
    if config.sasrec.enabled:
        device = resolve_device(config.device)
        model, idx, history = sasrec.train(config.sasrec, splits["train"], splits["valid"], items, device, progress)
        add("sasrec", {s: sasrec.rank(model, list(splits[s]["history"]), idx, config.sasrec.max_len, config.top_k,
                                      device=device) for s in ("valid", "test")})
        extra = {"best_epoch": history["best_epoch"], "epochs": len(history["epochs"])}
    with write_artifact(out, kind=BASELINES_KIND, config=config, parents=[dataset],
                        extra={"baselines": sorted({r["baseline"] for r in rows}), "sasrec": extra}) as d:
        pq.write_table(pa.Table.from_pylist(rows, schema=BASELINE_SCHEMA), d / PREDICTIONS_FILE)
        (d / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        if model is not None:
            torch.save({"state_dict": model.state_dict(), "items": idx.items,
                        "config": config.sasrec.model_dump()}, d / SASREC_FILE)
            (d / SASREC_HISTORY).write_text(json.dumps(history, indent=2))
    return open_artifact(out, kind=BASELINES_KIND)


def baseline_metrics(art: Artifact) -> dict[str, float]:
    """Flat test metrics of a baselines artifact: `popularity_recall_10`, `sasrec_ndcg_5`, ..."""
    m = json.loads((art.path / METRICS_FILE).read_text())
    out = {}
    for key, values in m.items():
        name, split = key.split("/")
        if split == "test":
            out.update(flat(name, values))
    return out


def step_baselines(config_json: str, dataset_uri: str, out: str, tracking_uri: str = "", parent_run_id: str = "",
                   **overrides) -> dict:
    from ..config import section
    from ..tracking import stage_run

    config = BaselinesConfig.build(section(config_json, "baselines"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    with stage_run("baselines", config, tracking_uri, parent_run_id) as tracker:
        tracker.log_input(dataset, context="training", table="samples.parquet")
        art = run_baselines(config, dataset, out)
        metrics = baseline_metrics(art)
        tracker.log_metrics(metrics)
        if (art.path / SASREC_HISTORY).exists():
            for e in json.loads((art.path / SASREC_HISTORY).read_text())["epochs"]:
                tracker.log_metrics({"sasrec_loss": e["loss"], "sasrec_valid_ndcg_10": e["valid_ndcg@10"]},
                                    step=e["epoch"])
        tracker.log_output(art, files=(METRICS_FILE, SASREC_HISTORY))
    return metrics


# ----------------------------------------------------------------------------- evaluate

def load_sid_map(dataset: Artifact, sids: Artifact | None) -> dict[str, str]:
    """item_id -> SID from a sids artifact, or the dataset's reference SIDs when none is given."""
    if sids is not None:
        path = sids.path / SIDS_FILE
        df = pq.read_table(path, columns=["item_id", "sid"]).to_pandas()
        source = str(path)
    else:
        df = read_items(dataset.path)[["item_id", "reference_sid"]].rename(columns={"reference_sid": "sid"})
        df = df[df["sid"].notna()]
        source = f"{dataset.uri}/items.parquet (reference_sid)"
        if df.empty:
            raise EvaluationError(f"{source}: no SID artifact given and the dataset has no reference SIDs")
    for row, (item, sid) in enumerate(zip(df["item_id"], df["sid"])):
        try:
            parse_sid(sid)
        except SIDError as exc:
            raise EvaluationError(f"{source}: row {row} (item {item!r}): {exc}") from None
    return dict(zip(df["item_id"].astype(str), df["sid"]))


def resolve_model(model_uri: str) -> Path:
    """A "model" artifact (HF directory under model/) or any reference `models.resolve_model_dir` takes."""
    from ..artifacts import ArtifactError
    from ..models import resolve_model_dir

    try:
        art = open_artifact(model_uri)
    except ArtifactError:
        return resolve_model_dir(model_uri)
    if (art.path / "model" / "config.json").exists():
        return art.path / "model"
    return resolve_model_dir(str(art.path))


def load_eval_model(model_uri: str, config: EvaluateConfig):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model_uri)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, config.dtype))
    return model.to(resolve_device(config.device)).eval(), tok, path


def _history_sids(df: pd.DataFrame, sid_by_item: dict[str, str], source: str) -> list[list[str]]:
    out = []
    for i, (hist, target) in enumerate(zip(df["history"], df["target"])):
        missing = next((h for h in list(hist) + [target] if h not in sid_by_item), None)
        if missing is not None:
            raise EvaluationError(f"{source}: sample {i} (user {df['user_id'].iloc[i]!r}): item {missing!r} has no SID")
        out.append([sid_by_item[h] for h in hist])
    return out


def _prediction_rows(mode, df, idx, sid_by_item, item_of_sid, ranked, traces=None, trace_no=0):
    rows = []
    for j, i in enumerate(idx):
        sids_scores = ranked[j]
        target = df["target"].iloc[i]
        tsid = sid_by_item[target]
        lst = [s for s, _ in sids_scores]
        tr = traces[j] if traces is not None else None
        rows.append({"mode": mode, "sample": int(i), "trace": trace_no if tr is None else tr[0],
                     "user_id": df["user_id"].iloc[i], "target": target, "target_sid": tsid,
                     "rank": target_rank(lst, tsid), "ranked_sids": lst,
                     "ranked_items": [item_of_sid[s] for s in lst], "scores": [float(x) for _, x in sids_scores],
                     "reasoning": tr[1].text if tr else None, "reasoning_tokens": tr[1].tokens if tr else 0,
                     "forced_close": tr[1].forced if tr else False})
    return rows


def run(config: EvaluateConfig, dataset: Artifact, sids: Artifact | None, model_uri: str,
        baselines: Artifact | None, out: str | Path, progress: bool = True) -> Artifact:
    import torch

    from ..models import add_sid_tokens
    from ..prompts import chat_prompt, sid_history_prompt
    from ..sid import vocabulary
    from . import report
    from .constrained import SIDTrie, rank_sids
    from .thinking import generate_reasoning

    t0 = time.time()
    if config.max_threads:
        torch.set_num_threads(config.max_threads)
    torch.manual_seed(config.seed)
    sid_by_item = load_sid_map(dataset, sids)
    item_of_sid: dict[str, str] = {}
    for item, s in sorted(sid_by_item.items()):
        item_of_sid.setdefault(s, item)
    shared = len(sid_by_item) - len(item_of_sid)
    samples = read_samples(dataset.path, config.split)
    if samples.empty:
        raise EvaluationError(f"{dataset.uri}: split {config.split!r} has no samples")
    hist_sids = _history_sids(samples, sid_by_item, f"{dataset.uri}/samples.parquet[{config.split}]")
    model, tok, model_path = load_eval_model(model_uri, config)
    if config.add_missing_sid_tokens:
        levels = max(len(parse_sid(s)) for s in item_of_sid)
        top = max(max(parse_sid(s)) for s in item_of_sid) + 1
        if add_sid_tokens(tok, model, vocabulary(levels, top)):
            log.warning("evaluate: SID tokens added with random embeddings (add_missing_sid_tokens)")
    trie = SIDTrie.build(item_of_sid, tok)
    valid = set(trie.sids)
    targets = [sid_by_item[t] for t in samples["target"]]
    ks = config.ks
    n_direct = min(len(samples), config.max_samples or len(samples))
    n_think = n_direct if config.thinking_samples < 0 else min(config.thinking_samples, len(samples))
    rows, bon_rows, metrics, tables = [], [], {}, {"main": {}, "thinking_subset": {}}
    lengths: list[int] = []
    curve: list[float] = []
    ranked_direct = None

    if config.direct:
        prompts = [chat_prompt(tok, sid_history_prompt(h)) for h in hist_sids[:n_direct]]
        ranked_direct = rank_sids(model, tok, prompts, trie, config.num_beams, config.batch_size,
                                  desc="direct", progress=progress)
        m = rank_metrics([[s for s, _ in r] for r in ranked_direct], targets[:n_direct], ks, valid)
        metrics["direct"] = m
        tables["main"]["model (direct)"] = m
        rows += _prediction_rows("direct", samples, range(n_direct), sid_by_item, item_of_sid, ranked_direct)
    if n_think > 0:
        prompts = [chat_prompt(tok, sid_history_prompt(h, thinking=True)) for h in hist_sids[:n_think]]
        traces = generate_reasoning(model, tok, prompts, config.max_reasoning_tokens, config.thinking_batch_size,
                                    desc="thinking", progress=progress)
        traces = [t[0] for t in traces]
        ranked = rank_sids(model, tok, [t.context for t in traces], trie, config.num_beams, config.batch_size,
                           desc="thinking SID", progress=progress)
        m = rank_metrics([[s for s, _ in r] for r in ranked], targets[:n_think], ks, valid)
        m["reasoning_tokens_mean"] = sum(t.tokens for t in traces) / len(traces)
        m["forced_close_rate"] = sum(t.forced for t in traces) / len(traces)
        metrics["thinking"] = m
        lengths += [t.tokens for t in traces]
        tables["thinking_subset"]["model (thinking)"] = m
        if ranked_direct is not None and n_think <= n_direct:
            tables["thinking_subset"]["model (direct)"] = rank_metrics(
                [[s for s, _ in r] for r in ranked_direct[:n_think]], targets[:n_think], ks, valid)
        if n_think == n_direct or not config.direct:
            tables["main"]["model (thinking)"] = m
        rows += _prediction_rows("thinking", samples, range(n_think), sid_by_item, item_of_sid, ranked,
                                 traces=[(0, t) for t in traces])
    if config.best_of_n > 0:
        n_bon = min(config.best_of_n_samples, len(samples))
        prompts = [chat_prompt(tok, sid_history_prompt(h, thinking=True)) for h in hist_sids[:n_bon]]
        traces = generate_reasoning(model, tok, prompts, config.max_reasoning_tokens, config.thinking_batch_size,
                                    num_return_sequences=config.best_of_n, do_sample=True,
                                    temperature=config.temperature, top_p=config.top_p,
                                    desc="best-of-N", progress=progress)
        flat_traces = [(i, j, t) for i, ts in enumerate(traces) for j, t in enumerate(ts)]
        ranked = rank_sids(model, tok, [t.context for _, _, t in flat_traces], trie, config.num_beams,
                           config.batch_size, desc="best-of-N SID", progress=progress)
        bon_rows = _prediction_rows("best_of_n", samples, [i for i, _, _ in flat_traces], sid_by_item, item_of_sid,
                                    ranked, traces=[(j, t) for _, j, t in flat_traces])
        ranks = [[r["rank"] for r in bon_rows if r["sample"] == i] for i in range(n_bon)]
        curve = best_of_n_curve(ranks, k=min(10, config.num_beams))
        lengths += [t.tokens for _, _, t in flat_traces]
        metrics["best_of_n"] = {f"recall@10_n{n + 1}": v for n, v in enumerate(curve)}
    if baselines is not None:
        n_main = n_direct if config.direct else n_think   # the samples of the main table
        tables_b = _score_baselines(baselines, samples, config.split, n_main, n_think, ks)
        for name, (m_main, m_think) in tables_b.items():
            metrics[name] = m_main
            tables["main"][name] = m_main
            if m_think is not None and n_think:
                tables["thinking_subset"][name] = m_think
    if len(tables["thinking_subset"]) <= 1 or n_think == n_direct:
        tables.pop("thinking_subset")
    wall = time.time() - t0
    info = {"model": str(model_uri), "split": f"{config.split} ({len(samples)} samples; direct on {n_direct if config.direct else 0}, "
            f"thinking on {n_think}, best-of-{config.best_of_n} on {min(config.best_of_n_samples, len(samples)) if config.best_of_n else 0})",
            "catalogue": f"{len(trie.sids)} SIDs over {len(sid_by_item)} items ({shared} items share a SID)",
            "decoding": f"constrained beam search, {config.num_beams} beams, length penalty 0; "
                        f"reasoning <= {config.max_reasoning_tokens} tokens",
            "wall time": f"{wall:.0f} s"}
    notes = []
    if shared:
        notes.append(f"{shared} items share a SID with another item; the model is scored at SID level "
                     "(a prediction of the shared SID counts for each of its items).")
    examples = [r for r in rows if r["mode"] == "thinking"][:3] or rows[:3]
    with write_artifact(out, kind=KIND, config=config,
                        parents=[a for a in (dataset, sids, baselines) if a is not None] + [{"uri": str(model_uri), "kind": "model"}],
                        extra={"model_path": str(model_path), "wall_s": round(wall, 1)}) as d:
        pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), d / PREDICTIONS_FILE)
        if bon_rows:
            pq.write_table(pa.Table.from_pylist(bon_rows, schema=PREDICTION_SCHEMA), d / BEST_OF_N_FILE)
        (d / METRICS_FILE).write_text(json.dumps({**metrics, "best_of_n_curve": curve}, indent=2))
        md, page = report.render(d, "SIDReasoner evaluation", info, tables, ks, curve, lengths, examples, notes)
        (d / REPORT_MD).write_text(md)
        (d / REPORT_HTML).write_text(page)
    return open_artifact(out, kind=KIND)


def _score_baselines(art: Artifact, samples: pd.DataFrame, split: str, n_direct: int, n_think: int, ks):
    """Each baseline's metrics on the first n_direct (and n_think) samples, checked sample by sample."""
    df = pq.read_table(art.path / PREDICTIONS_FILE).to_pandas()
    df = df[df["split"] == split]
    out = {}
    for name, g in df.groupby("baseline", sort=True):
        g = g.set_index("sample").sort_index()
        if len(g) != len(samples) or list(g["user_id"]) != list(samples["user_id"]) or \
                list(g["target"]) != list(samples["target"]):
            raise EvaluationError(f"{art.uri}/{PREDICTIONS_FILE}: baseline {name!r} was scored on other "
                                  f"{split} samples than this dataset's (built from another dataset?)")
        ranked = [list(r) for r in g["ranked"]]
        tgt = list(g["target"])
        n = n_direct or len(samples)
        main = rank_metrics(ranked[:n], tgt[:n], ks)
        think = rank_metrics(ranked[:n_think], tgt[:n_think], ks) if n_think else None
        out[name] = (main, think)
    return out


def flat_metrics(art: Artifact) -> dict[str, float]:
    m = json.loads((art.path / METRICS_FILE).read_text())
    out = {}
    for key, values in m.items():
        if key == "best_of_n_curve":
            continue
        out.update(flat(key, values))
    out["wall_s"] = float(art.manifest.get("wall_s", 0))
    return out


def step(config_json: str, dataset_uri: str, sids_uri: str, model_uri: str, baselines_uri: str, out: str,
         tracking_uri: str = "", parent_run_id: str = "", **overrides) -> dict:
    """The pipeline step: `evaluate` section of the config; empty `sids_uri`/`baselines_uri` = none."""
    from ..config import section
    from ..tracking import stage_run

    config = EvaluateConfig.build(section(config_json, "evaluate"), source="config_json", **overrides)
    dataset = open_artifact(dataset_uri, kind=DATASET_KIND)
    sids = open_artifact(sids_uri, kind=SIDS_KIND) if sids_uri else None
    baselines = open_artifact(baselines_uri, kind=BASELINES_KIND) if baselines_uri else None
    with stage_run("evaluate", config, tracking_uri, parent_run_id) as tracker:
        for art, ctx in ((dataset, "evaluation"), (sids, "catalogue"), (baselines, "baselines")):
            if art is not None:
                tracker.log_input(art, context=ctx)
        art = run(config, dataset, sids, model_uri, baselines, out)
        metrics = flat_metrics(art)
        tracker.log_metrics(metrics)
        curve = json.loads((art.path / METRICS_FILE).read_text()).get("best_of_n_curve", [])
        for n, v in enumerate(curve, 1):
            tracker.log_metrics({"best_of_n_recall_10": v}, step=n)
        plots = tuple(f"plots/{p.name}" for p in sorted((art.path / "plots").glob("*.png")))
        tracker.log_output(art, files=(METRICS_FILE, REPORT_MD, REPORT_HTML) + plots)
    return metrics
