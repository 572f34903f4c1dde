"""Does GRPO's validation curve predict test? Scores GRPO policies of a quality run on the whole valid split and on
the test split (issue 16: the stage publishes the step with the best validation R@10 on a fixed valid subset).

For a run directory (a `bench/quality.py` run) and checkpoint directories of its GRPO stage (`checkpoint-N` under the
stage's work dir `grpo-op/.model.work/checkpoints/`, copied while the stage runs: it removes its work dir when it
finishes; or any HF model directory with the run's tokenizer), in thinking mode with the run's evaluate settings (no
best-of-N):
  - R@10 of the run's cold-started model and of each checkpoint on the whole valid split, and on the valid subsets
    GRPO's validation draws (`grpo.eval_samples` of them, `sid_rows`' pick) for 200 and 1000 samples;
  - R@10 on test, direct mode included;
  - each checkpoint / the cold-start on valid and on test, paired 95% bootstrap over the samples.
Scores are cached under `<run>/grpo_checkpoints/`, so a killed bench resumes. Ends with ONE line that is a JSON
object of the figures.

    .venv/bin/python bench/grpo_checkpoints.py bench_runs/s0/quality/S3/seed0/2026... step40=<work>/checkpoint-40
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coldstart_again import run_config, scored, step_dir  # noqa: E402  (bench/ is not a package)
from quality import paired_bootstrap, sample_hits  # noqa: E402

SUBSETS = (200, 1000)


def figures(run_dir: Path, models: dict[str, Path]) -> dict:
    from sidreasoner_core.dataset import read_samples

    steps = step_dir(run_dir)
    cfg = run_config(steps)
    seed = cfg.get("grpo", {}).get("seed", 42)
    valid = read_samples(steps / "data-op" / "dataset", "valid")
    subsets = {n: valid.sample(n=n, random_state=seed).index for n in SUBSETS if n < len(valid)}
    models = {"cold-start": steps / "coldstart-op" / "model", **models}
    hits, out = {}, {}
    for name, model in models.items():
        row = {}
        for split in ("valid", "test"):
            cache = scored(steps, cfg, model, run_dir / "grpo_checkpoints" / name / split, split=split,
                           direct=split == "test")  # thinking mode; direct too on test
            m = json.loads((cache / "metrics.json").read_text())
            hits[name, split] = sample_hits(cache / "predictions.parquet", "thinking")
            row[f"{split} thinking R@10"] = m["thinking"]["recall@10"]
            if split == "test":
                row["test direct R@10"] = m["direct"]["recall@10"]
        for n, idx in subsets.items():
            row[f"valid subset {n} thinking R@10"] = float(hits[name, "valid"].reindex(idx).mean())
        for split in ("valid", "test"):
            if name != "cold-start" and (pair := paired_bootstrap(hits[name, split], hits["cold-start", split])):
                row[f"{split} / cold-start"] = list(pair)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="quality run directory (holds pipeline_root/)")
    ap.add_argument("models", nargs="+", help="NAME=DIR: a GRPO checkpoint (or model directory) to score")
    args = ap.parse_args()
    models = dict(a.split("=", 1) for a in args.models)
    out = figures(Path(args.run), {k: Path(v) for k, v in models.items()})
    for name, row in out.items():
        print(name)
        for k, v in row.items():
            print(f"  {k}: " + (f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if isinstance(v, list) else f"{v:.4f}"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
