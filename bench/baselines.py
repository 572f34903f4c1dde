"""Most-popular and SASRec on the full Industrial_and_Scientific split: Recall/NDCG@{5,10} on test.

Runs the baselines stage itself (train on train, early stopping on valid NDCG@10, score test with
the evaluation's metric code). Paper Table 2 (full original train data): SASRec R@10 0.0964 on
Industrial. Ends with one JSON line.

    .venv/bin/python bench/baselines.py [--threads 1] [--loss ce|bce]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss", default="ce", choices=["ce", "bce"])
    ap.add_argument("--max-epochs", type=int, default=200)
    args = ap.parse_args()

    from sidreasoner_core.artifacts import open_artifact
    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.data.stage import run as run_data
    from sidreasoner_core.evaluation.config import BaselinesConfig
    from sidreasoner_core.evaluation.baselines.stage import baseline_metrics, run_baselines

    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        dataset = run_data(DataConfig(), args.data, Path(tmp) / "dataset")
        cfg = BaselinesConfig(max_threads=args.threads, sasrec={"loss": args.loss, "max_epochs": args.max_epochs})
        t = time.perf_counter()
        art = run_baselines(cfg, dataset, Path(tmp) / "baselines")
        wall = time.perf_counter() - t
        m = baseline_metrics(art)
        sas = open_artifact(art.uri).manifest["sasrec"]
    res = {"test_samples": int(m["sasrec_n"]), "sasrec_loss": args.loss, "sasrec_best_epoch": sas["best_epoch"],
           "sasrec_epochs": sas["epochs"], "wall_s": round(wall, 1)}
    for name in ("popularity", "sasrec"):
        for k in (5, 10):
            for metric in ("recall", "ndcg"):
                res[f"{name}_{metric}_{k}"] = round(m[f"{name}_{metric}_{k}"], 4)
    for name in ("popularity", "sasrec"):
        print(f"{name:11s} R@5 {res[f'{name}_recall_5']:.4f}  N@5 {res[f'{name}_ndcg_5']:.4f}  "
              f"R@10 {res[f'{name}_recall_10']:.4f}  N@10 {res[f'{name}_ndcg_10']:.4f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
