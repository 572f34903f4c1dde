"""The cold-start stage again from a quality run's aligned model, with `coldstart` settings changed, against the
run's own cold-started model (issue 16: RL must not cost the direct mode, and the cold-start is where it did).

For each run directory (a `bench/quality.py` run, finished or stopped after its cold-start): trains the run's
aligned model with the run's `coldstart` section merged with `--coldstart` (the run's seed), then scores, on the
test split with the run's evaluate settings (no best-of-N), in direct and thinking mode:
  - the run's aligned model (direct), the run's own cold-started model and the new one (both modes);
  - with `--grpo`, the new cold-started model trained by the run's `grpo` section, as published (both modes);
  - paired 95% bootstrap ratios over the test samples (`bench/quality.py`'s).
Models and metrics are cached beside the run, so a killed run resumes. Ends with ONE line that is a JSON object
of the figures.

    .venv/bin/python bench/coldstart_again.py bench_runs/s1/quality/S3/seed1/2026... \\
        --coldstart '{"self_traces": {"direct_rows": true}}'
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import evaluated, paired_bootstrap, sample_hits  # noqa: E402  (bench/ is not a package)


def merged(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced, nested mappings merged key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merged(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def step_dir(run_dir: Path) -> Path:
    """The pipeline's task directory of the run (`pipeline_root/<pipeline run>/`)."""
    hits = sorted(run_dir.glob("pipeline_root/*/align-op"))
    if len(hits) != 1:
        raise SystemExit(f"{run_dir}: expected one pipeline run with an align-op step, found {len(hits)}")
    return hits[0].parent


def run_config(steps: Path) -> dict:
    """The run's resolved config (the `resolve-config-op` step's output)."""
    out = json.loads((steps / "resolve-config-op" / "executor_output.json").read_text())
    return json.loads(out["parameterValues"]["config_json"])


def scored(steps: Path, cfg: dict, model: Path, out: Path, direct_only: bool = False, **override) -> Path:
    """`out`'s predictions of `model` on test with the run's evaluate settings (computed once); `override`
    changes evaluate settings (e.g. `split="valid"`)."""
    from sidreasoner_core.evaluation.config import EvaluateConfig

    ev = EvaluateConfig.build(cfg.get("evaluate", {}), source="config").model_dump()
    ev.update(best_of_n=0, batch_size=32, **({"thinking_samples": 0} if direct_only else {}), **override)
    evaluated(ev, steps / "data-op" / "dataset", steps / "sids-op" / "sids", model, out)
    return out


def coldstart_again(steps: Path, cfg: dict, out: Path) -> Path:
    """The run's aligned model cold-started with `cfg`'s `coldstart` section (trained once)."""
    from sidreasoner_core.reasoning.stage import coldstart_step

    if not (out / "manifest.json").is_file():
        coldstart_step(json.dumps(cfg), str(steps / "align-op" / "aligned_model"), str(steps / "data-op" / "dataset"),
                       str(steps / "sids-op" / "sids"), str(steps / "enrich-op" / "corpus"), str(out))
    return out


def grpo_again(steps: Path, cfg: dict, model: Path, out: Path) -> Path:
    """`model` trained by `cfg`'s `grpo` section (the run's own; trained once, resumed from its checkpoints)."""
    from sidreasoner_core.reasoning.stage import grpo_step

    if not (out / "manifest.json").is_file():
        grpo_step(json.dumps(cfg), str(model), str(steps / "data-op" / "dataset"), str(steps / "sids-op" / "sids"),
                  str(out))
    return out


def figures(run_dir: Path, override: dict, rl: bool = False) -> dict:
    steps = step_dir(run_dir)
    cfg = run_config(steps)
    new_cfg = {**cfg, "coldstart": merged(cfg.get("coldstart", {}), override)}
    tag = hashlib.sha256(json.dumps(new_cfg["coldstart"], sort_keys=True).encode()).hexdigest()[:8]
    out = run_dir / f"coldstart_again_{tag}"
    out.mkdir(exist_ok=True)
    (out / "coldstart.json").write_text(json.dumps(new_cfg["coldstart"], indent=2))
    evals = {"aligned": scored(steps, cfg, steps / "align-op" / "aligned_model", run_dir / "aligned_direct_eval", True),
             "cold-start (run's)": scored(steps, cfg, steps / "coldstart-op" / "model", run_dir / "coldstart_both_eval"),
             "cold-start (again)": scored(steps, new_cfg, coldstart_again(steps, new_cfg, out / "model"), out / "eval")}
    hits, figs = {}, {"run": str(run_dir), "coldstart override": override}
    if rl:
        policy = grpo_again(steps, new_cfg, out / "model", out / "grpo_model")
        evals["after RL"] = scored(steps, new_cfg, policy, out / "grpo_eval")
        m = json.loads((policy / "manifest.json").read_text()).get("metrics", {})
        figs["GRPO policy"] = {k: m[k] for k in ("published_step", "train_steps") if k in m}
    for name, ev in evals.items():
        m = json.loads((ev / "metrics.json").read_text())
        for mode in ("direct", "thinking"):
            if mode in m:
                hits[f"{name} {mode}"] = sample_hits(ev / "predictions.parquet", mode)
                figs[f"{name} {mode}"] = {f: m[mode][f] for f in ("recall@10", "ndcg@10")}
                if mode == "thinking":
                    figs[f"{name} {mode}"]["self_closed"] = 1 - m[mode].get("forced_close_rate", 1.0)
    for a, b in (("cold-start (again) direct", "aligned direct"),
                 ("cold-start (run's) direct", "aligned direct"),
                 ("cold-start (again) thinking", "aligned direct"),
                 ("cold-start (again) thinking", "cold-start (run's) thinking"),
                 ("cold-start (again) direct", "cold-start (run's) direct"),
                 ("after RL thinking", "cold-start (again) thinking"),
                 ("after RL thinking", "aligned direct"),
                 ("after RL direct", "aligned direct")):
        if a in hits and b in hits and (pair := paired_bootstrap(hits[a], hits[b])):
            figs[f"{a} / {b}"] = [round(x, 4) for x in pair]
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="quality run directories (each holds pipeline_root/)")
    ap.add_argument("--coldstart", required=True, help="JSON `coldstart` settings merged into each run's own")
    ap.add_argument("--grpo", action="store_true", help="then GRPO from the new cold-started model (the run's `grpo` "
                                                        "section), scored in both modes")
    args = ap.parse_args()
    override = json.loads(args.coldstart)
    out = []
    for run in args.runs:
        figs = figures(Path(run), override, args.grpo)
        print(f"\n## {run}")
        for k, v in figs.items():
            if isinstance(v, dict) and "recall@10" in v:
                print(f"{k}: R@10 {v['recall@10']:.4f}, N@10 {v['ndcg@10']:.4f}"
                      + (f", self-closed {v['self_closed']:.1%}" if "self_closed" in v else ""))
            elif isinstance(v, list):
                print(f"{k}: {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]")
        out.append(figs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
