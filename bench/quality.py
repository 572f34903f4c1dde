"""Quality at CPU scale (issue 9): is the pipeline's model better than SASRec on the same split?

Runs the `quality` preset (or any preset) of the whole pipeline through `kfp.local` on the full
Industrial_and_Scientific files, once per seed and per alignment-corpus ablation (S1/S2/S3), or
reads finished runs (`--from-runs`). For each run it reads, on the test split:
  - the pipeline's evaluation: the final model (cold-start + GRPO) in direct and thinking mode,
    SASRec (early-stopped on valid) and most-popular, all trained on the same train split;
  - the aligned model before cold-start + GRPO, scored here in direct mode (the ablation "without
    cold-start + GRPO" comes from the same run, so both sides share the alignment).
Prints Recall/NDCG@{5,10} per method, mean and a 95% t-interval over the seeds, and the ratio
R@10(model)/R@10(SASRec) per seed. Ends with ONE line that is a JSON object of the figures.

    .venv/bin/python bench/quality.py [--seeds 3] [--ablations S3] [--preset quality]
    .venv/bin/python bench/quality.py --from-runs bench_runs/quality/S3/seed0/2026...  # read finished runs
    .venv/bin/python bench/quality.py --from-runs ... --grpo-again quality  # their cold-started models
        # trained again by the quality preset's GRPO (run's seed), then scored as the runs were
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Seeds often run side by side on the same cores: OpenMP threads sleep instead of spinning, as the
# figures in docs/quality.md were measured (sidreasoner_core/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INDUSTRIAL = REPO.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"
FIGURES = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# t quantiles (two-sided 95%) by degrees of freedom; normal beyond
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seeded(config: dict, seed: int, ablation: str) -> dict:
    """The preset with every training seed set to `seed` and the alignment corpus of `ablation`.
    A scratch model (small-qwen3) also gets its initialisation from the seed."""
    cfg = json.loads(json.dumps(config))
    align = cfg.setdefault("align", {})
    align.update(seed=seed, ablation=ablation)
    align.setdefault("train", {})["seed"] = seed
    from sidreasoner_core.models import SCRATCH_SIZES

    model = str(align.get("model", ""))
    if model in SCRATCH_SIZES:
        align["model"] = f"{model}@{seed}"
    for name in ("coldstart", "grpo"):
        cfg.setdefault(name, {})["seed"] = seed
    cfg.setdefault("baselines", {}).setdefault("sasrec", {})["seed"] = seed
    return cfg


def run_pipeline(data: Path, config: dict, out_dir: Path) -> Path:
    from pipelines.local import run_local

    summary = run_local(data_uri=data, config=config, out_dir=out_dir)
    return Path(summary["run_dir"])


def find(run_dir: Path, output: str) -> Path:
    """The run's artifact named `output` ("dataset") or `task/output` ("coldstart-op/model")."""
    summary = json.loads((run_dir / "summary.json").read_text())
    hits = [a["path"] for key, a in summary["artifacts"].items() if output in (key, key.split("/")[-1])]
    if len(hits) != 1:
        raise SystemExit(f"{run_dir}: expected one '{output}' artifact, found {len(hits)}")
    return Path(hits[0])


def evaluated(settings: dict, dataset: Path, sids: Path, model: str | Path, out: Path) -> dict:
    """Metrics of `model` on `dataset` under the evaluate `settings` (their split: test unless they name another),
    written to `out` once and read from there after (a killed bench resumes)."""
    if not (out / "metrics.json").is_file():
        from sidreasoner_core.artifacts import open_artifact
        from sidreasoner_core.evaluation.config import EvaluateConfig
        from sidreasoner_core.evaluation.stage import run as evaluate

        evaluate(EvaluateConfig.model_validate(settings), open_artifact(dataset), open_artifact(sids), str(model), None,
                 out)
    return json.loads((out / "metrics.json").read_text())


def aligned_direct(run_dir: Path, batch_size: int) -> dict:
    """Direct-mode metrics of the aligned model (no cold-start/GRPO), cached beside the run."""
    return evaluated({"thinking_samples": 0, "batch_size": batch_size}, find(run_dir, "dataset"), find(run_dir, "sids"),
                     find(run_dir, "aligned_model"), run_dir / "aligned_eval")["direct"]


def evaluate_again(run_dir: Path, model: str | Path, override: dict, out: Path) -> dict:
    """Metrics of `model` (the run's "coldstart-op/model", "grpo-op/model", or a model directory) under
    the run's own evaluate settings with `override` applied, written to `out` once and read from there after."""
    cfg = json.loads((find(run_dir, "evaluation") / "manifest.json").read_text())["config"]  # the run's own
    return evaluated({**cfg, **override}, find(run_dir, "dataset"), find(run_dir, "sids"),
                     model if isinstance(model, Path) else find(run_dir, model), out)


def coldstart_thinking(run_dir: Path, batch_size: int) -> dict:
    """Thinking mode and best-of-N (N = 1..16) of the cold-started model, before RL (paper Table 3,
    Figure 4), with the run's own evaluate settings; cached beside the run."""
    return evaluate_again(run_dir, "coldstart-op/model", {"direct": False, "batch_size": batch_size, "best_of_n": 16},
                          run_dir / "coldstart_eval")


def rescored_thinking(run_dir: Path, model: str, override: dict, batch_size: int) -> dict:
    """Thinking mode of the run's `model` under the run's evaluate settings with `override` applied
    (e.g. {"reasoning_samples": 8}); cached beside the run."""
    tag = "-".join(f"{k}={v}" for k, v in sorted(override.items()))
    out = run_dir / f"rescore_{model.split('-')[0]}_{tag}"
    return evaluate_again(run_dir, model, {"direct": False, "batch_size": batch_size, "best_of_n": 0, **override},
                          out)["thinking"]


def grpo_again(run_dir: Path, grpo: dict, batch_size: int) -> Path:
    """The evaluation directory of the run's cold-started model trained again by GRPO with the `grpo` settings (and the
    run's seed), scored with the run's own evaluate settings; model and metrics cached beside the run,
    so a killed GRPO resumes from its last checkpoint."""
    from sidreasoner_core.reasoning.stage import grpo_step

    grpo = {**grpo, "seed": json.loads((find(run_dir, "grpo-op/model") / "manifest.json").read_text())["config"]["seed"]}
    out = run_dir / f"grpo_again_{hashlib.sha256(json.dumps(grpo, sort_keys=True).encode()).hexdigest()[:8]}"
    if not (out / "model" / "manifest.json").is_file():
        out.mkdir(exist_ok=True)
        (out / "grpo.json").write_text(json.dumps(grpo, indent=2))
        grpo_step(json.dumps({"grpo": grpo}), str(find(run_dir, "coldstart-op/model")), str(find(run_dir, "dataset")),
                  str(find(run_dir, "sids")), str(out / "model"))
    evaluate_again(run_dir, out / "model", {"batch_size": batch_size}, out / "eval")
    return out / "eval"


def published(grpo_model: Path) -> dict:
    """Which GRPO step the artifact holds (`grpo.publish`; 0 = the cold-started input) and how many ran."""
    m = json.loads((grpo_model / "manifest.json").read_text()).get("metrics", {})
    return {k: m[k] for k in ("published_step", "train_steps") if k in m}


def in_top10(ranks: "pd.Series") -> "pd.Series":
    """Whether each target is in the top 10 (rank is 0-based, -1 = not in the ranked list)."""
    return ranks.between(0, 9)


def guess_spread(predictions: Path) -> dict:
    """How spread thinking mode's guesses are: greedy reasoning can collapse onto one closing sentence
    (the expected next item, e.g. "Next: a product by Plymor.") for most users. The share of traces
    ending in the commonest closing sentence, how many distinct ones there are, and R@10 of thinking
    and direct mode on the samples whose trace ends in it."""
    import pandas as pd

    from sidreasoner_core.enrich.validate import SENTENCE_SPLIT

    p = pd.read_parquet(predictions, columns=["mode", "sample", "rank", "reasoning"])
    think, direct = p[p["mode"] == "thinking"], p[p["mode"] == "direct"].set_index("sample")["rank"]
    last = think["reasoning"].fillna("").map(lambda t: (SENTENCE_SPLIT.split(t.strip()) or [""])[-1])
    top = last.value_counts()
    out = {"top_guess_share": float(top.iloc[0] / len(last)), "distinct_guesses": float(len(top))}
    at_top = think[last == top.index[0]]
    hit = lambda ranks: float(in_top10(ranks).mean())
    out["recall@10 thinking, top guess"] = hit(at_top["rank"])
    if len(direct):
        out["recall@10 direct, top guess"] = hit(direct.reindex(at_top["sample"]))
    return out


def run_figures(run_dir: Path, batch_size: int, rescore: dict | None = None, grpo: dict | None = None) -> dict[str, dict]:
    """The run's figures; with `rescore`, thinking mode (after RL and cold-start only) is scored again
    with those evaluate settings and the run's own thinking rows become "(greedy thinking)"; with `grpo`,
    the model after RL is the run's cold-started model trained again with those GRPO settings."""
    evaluation = find(run_dir, "evaluation")
    m = json.loads((evaluation / "metrics.json").read_text())
    if grpo:
        evaluation = grpo_again(run_dir, grpo, batch_size)
        m = {**m, **{k: v for k, v in json.loads((evaluation / "metrics.json").read_text()).items()
                     if k not in ("sasrec", "popularity")}}
    cs = coldstart_thinking(run_dir, batch_size)
    thinking, cs_thinking = m.get("thinking"), cs.get("thinking")
    out = {"model (direct)": m.get("direct"), "model (thinking)": thinking,
           "cold-start only (thinking)": cs_thinking,
           "aligned only (direct)": aligned_direct(run_dir, batch_size),
           "SASRec": m.get("sasrec"), "most-popular": m.get("popularity")}
    if rescore:
        out.update({"model (thinking)": rescored_thinking(run_dir, "grpo-op/model", rescore, batch_size),
                    "cold-start only (thinking)": rescored_thinking(run_dir, "coldstart-op/model", rescore, batch_size),
                    "model (greedy thinking)": thinking, "cold-start only (greedy thinking)": cs_thinking})
    figs = {name: {f: v[f] for f in FIGURES} for name, v in out.items() if v}
    for name, v in out.items():
        if v and "thinking" in name and name in figs:
            figs[name]["self_closed"] = 1 - v.get("forced_close_rate", 1.0)
    grpo_model = evaluation.parent / "model" if grpo else find(run_dir, "grpo-op/model")
    figs["GRPO policy"] = published(grpo_model)
    figs["best-of-N before RL"] = {f"n{i + 1}": x for i, x in enumerate(cs.get("best_of_n_curve", []))}
    figs["best-of-N after RL"] = {f"n{i + 1}": x for i, x in enumerate(m.get("best_of_n_curve", []))}
    if not rescore:  # the greedy traces' spread (the rescored ones are sampled)
        figs["guesses before RL"] = guess_spread(run_dir / "coldstart_eval" / "predictions.parquet")
        figs["guesses after RL"] = guess_spread(evaluation / "predictions.parquet")
        figs[BOOTSTRAP] = paired_intervals({
            "model (thinking)": (evaluation / "predictions.parquet", "thinking"),
            "model (direct)": (evaluation / "predictions.parquet", "direct"),
            "cold-start only (thinking)": (run_dir / "coldstart_eval" / "predictions.parquet", "thinking"),
            "aligned only (direct)": (run_dir / "aligned_eval" / "predictions.parquet", "direct")})
    return {k: v for k, v in figs.items() if v}


# issue 16's targets: thinking after RL vs the aligned model's direct mode, the RL gain in thinking mode
# over cold-start alone, and what RL did to the direct mode
PAIRED = {"thinking after RL / aligned direct": ("model (thinking)", "aligned only (direct)"),
          "thinking after RL / cold-start thinking (RL gain)": ("model (thinking)", "cold-start only (thinking)"),
          "direct after RL / aligned direct": ("model (direct)", "aligned only (direct)")}
BOOTSTRAP = "paired 95% bootstrap over test samples"


def sample_hits(predictions: Path, mode: str) -> "pd.Series":
    """1 where the target is in the top 10 of `mode`'s ranking, by test sample (one row per sample)."""
    import pandas as pd

    p = pd.read_parquet(predictions, columns=["mode", "sample", "rank"])
    p = p[p["mode"] == mode]
    if p["sample"].duplicated().any():
        raise ValueError(f"{predictions}: several {mode} rows per sample; no per-sample hit to pair")
    return in_top10(p.set_index("sample")["rank"]).astype(float)


def paired_bootstrap(a: "pd.Series", b: "pd.Series", resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float] | None:
    """R@10(a) / R@10(b) on the test samples both were scored on, and its 95% percentile interval,
    resampling the samples (None where b has no hit there). It measures the test split's noise within
    one trained model, not the spread over training seeds."""
    import numpy as np

    both = a.to_frame("a").join(b.to_frame("b"), how="inner")  # e.g. thinking scored on the first N only
    x, y = both["a"].to_numpy(), both["b"].to_numpy()
    if not y.sum():
        return None
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    ratios = x[idx].sum(1) / np.maximum(y[idx].sum(1), 1e-12)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(x.sum() / y.sum()), float(lo), float(hi)


def paired_intervals(sources: dict[str, tuple[Path, str]]) -> dict[str, float]:
    """For each of issue 16's ratios whose two sides have predictions: the ratio, its low and high end."""
    hits = {name: sample_hits(*source) for name, source in sources.items()}  # each read once, used in several ratios
    out = {}
    for label, (a, b) in PAIRED.items():
        if a in hits and b in hits and (pair := paired_bootstrap(hits[a], hits[b])):
            r, lo, hi = pair
            out.update({label: r, f"{label} low": lo, f"{label} high": hi})
    return out


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a 95% t-interval (0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def summarise(runs: list[dict[str, dict]]) -> dict:
    methods = list(dict.fromkeys(name for r in runs for name in r))
    table = {}
    for name in methods:
        keys = list(dict.fromkeys(k for r in runs if name in r for k in r[name]))
        table[name] = {f: interval([r[name][f] for r in runs if f in r.get(name, {})]) for f in keys}
    ratios = {}
    for name in ("model (direct)", "model (thinking)", "aligned only (direct)"):
        per_seed = [r[name]["recall@10"] / r["SASRec"]["recall@10"] for r in runs
                    if name in r and r.get("SASRec", {}).get("recall@10")]  # a run whose SASRec scored 0 has no ratio
        if per_seed:
            ratios[name] = {"per_seed": [round(x, 3) for x in per_seed], "mean_ci": interval(per_seed)}
    for label, (a, b) in PAIRED.items():
        per_seed = [r[a]["recall@10"] / r[b]["recall@10"] for r in runs if a in r and r.get(b, {}).get("recall@10")]
        if per_seed:
            ratios[label] = {"per_seed": [round(x, 3) for x in per_seed], "mean_ci": interval(per_seed)}
    return {"table": table, "ratio_r10_vs_sasrec": ratios, "n": len(runs)}


def print_summary(title: str, s: dict) -> None:
    print(f"\n## {title} ({s['n']} run(s); mean ± 95% interval)")
    print("| method | " + " | ".join(FIGURES) + " |")
    print("|---" * (len(FIGURES) + 1) + "|")
    for name, figs in s["table"].items():
        if set(FIGURES) <= set(figs):
            extra = f" (self-closed {figs['self_closed'][0]:.1%})" if "self_closed" in figs else ""
            print(f"| {name}{extra} | " + " | ".join(f"{figs[f][0]:.4f} ± {figs[f][1]:.4f}" for f in FIGURES) + " |")
    for name, figs in s["table"].items():
        if name.startswith("best-of-N"):
            print(f"{name}, R@10 for N = 1..{len(figs)}: " + " ".join(f"{m:.3f}" for m, _ in figs.values()))
        if name == BOOTSTRAP:
            for label in PAIRED:
                if label in figs:
                    print(f"{label}: {figs[label][0]:.3f}, {name} [{figs[label + ' low'][0]:.3f}, "
                          f"{figs[label + ' high'][0]:.3f}] (mean over runs)")
        if name.startswith("guesses"):
            print(f"thinking, {name}: " + ", ".join(f"{k} {m:.3f} ± {h:.3f}" for k, (m, h) in figs.items()))
    for name, r in s["ratio_r10_vs_sasrec"].items():
        m, h = r["mean_ci"]
        label = name if "/" in name else f"R@10({name}) / R@10(SASRec)"
        print(f"{label} = {m:.3f} ± {h:.3f}  (per seed {r['per_seed']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quality")
    ap.add_argument("--data", default=str(INDUSTRIAL))
    ap.add_argument("--seeds", type=int, default=1, help="runs per ablation, seeds 0..N-1")
    ap.add_argument("--seed-list", default=None, help="comma-separated seeds instead of 0..N-1 (parallel runs)")
    ap.add_argument("--ablations", default="S3", help="comma-separated alignment corpora: S1,S2,S3")
    ap.add_argument("--runs-dir", default=str(REPO / "bench_runs" / "quality"))
    ap.add_argument("--from-runs", nargs="*", default=None,
                    help="read these finished run directories (each holds summary.json) instead of running")
    ap.add_argument("--eval-batch-size", type=int, default=32)
    ap.add_argument("--rescore-thinking", default=None,
                    help='JSON evaluate settings to score thinking mode again with, before and after RL '
                         '(e.g. \'{"reasoning_samples": 8}\'); the run\'s own thinking rows become "greedy"')
    ap.add_argument("--grpo-again", default=None,
                    help="preset or config file whose `grpo` section trains each run's cold-started model again "
                         "(the run's seed); that model replaces the run's own after RL")
    args = ap.parse_args()

    from sidreasoner_core.config import load_mapping

    rescore = json.loads(args.rescore_thinking) if args.rescore_thinking else None
    grpo = load_mapping(args.grpo_again).get("grpo", {}) if args.grpo_again else None
    if rescore and grpo:
        raise SystemExit("--rescore-thinking and --grpo-again: choose one (the rescore reads the run's own GRPO model)")
    results: dict[str, list] = {}
    walls: dict[str, list] = {}
    if args.from_runs is not None:
        for d in args.from_runs:
            d = Path(d)
            cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
            ablation = cfg.get("align", {}).get("ablation", "S3")
            results.setdefault(ablation, []).append(run_figures(d, args.eval_batch_size, rescore, grpo))
    else:
        preset = load_mapping(args.preset)
        seeds = [int(x) for x in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
        for ablation in args.ablations.split(","):
            for seed in seeds:
                cfg = seeded(preset, seed, ablation)
                t0 = time.time()
                run_dir = run_pipeline(Path(args.data), cfg, Path(args.runs_dir) / ablation / f"seed{seed}")
                (run_dir / "config.json").write_text(json.dumps(cfg, indent=2))
                wall = time.time() - t0
                figs = run_figures(run_dir, args.eval_batch_size, rescore, grpo)
                print(f"{ablation} seed {seed}: {wall / 60:.1f} min, {run_dir}")
                print(json.dumps(figs))
                results.setdefault(ablation, []).append(figs)
                walls.setdefault(ablation, []).append(round(wall, 1))
    out = {}
    for ablation, runs in results.items():
        s = summarise(runs)
        print_summary(f"{ablation} ({args.preset})", s)
        out[ablation] = {**s, "wall_s": walls.get(ablation)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
