from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import ConfigError, section


def register(app: typer.Typer) -> None:
    @app.command("baselines")
    def baselines_cmd(
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (data stage output)"),
        out: str = typer.Option(..., "--out", help="output artifact directory (local or s3://)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `baselines` section is used"),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="SASRec epoch limit"),
    ) -> None:
        """Train and score the most-popular and SASRec baselines on the dataset's splits."""
        from ..artifacts import ArtifactError, open_artifact
        from ..cli import fail
        from .config import BaselinesConfig
        from ..sid import SIDError
        from .baselines.stage import baseline_metrics, run_baselines
        from .errors import EvaluationError

        try:
            data = section(config, "baselines")
            if max_epochs is not None:
                data = {**data, "sasrec": {**data.get("sasrec", {}), "max_epochs": max_epochs}}
            cfg = BaselinesConfig.build(data, source=config or "<cli>")
            art = run_baselines(cfg, open_artifact(dataset, kind="dataset"), out)
        except (ConfigError, ArtifactError, EvaluationError, SIDError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(baseline_metrics(art), indent=2))

    @app.command("evaluate")
    def evaluate_cmd(
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (data stage output)"),
        model: str = typer.Option(..., "--model", help="model artifact dir, HF dir, s3://, 'smollm2', 'tiny-qwen3'"),
        out: str = typer.Option(..., "--out", help="output artifact directory (local or s3://)"),
        sids: str = typer.Option("", "--sids", help="sids artifact (default: the dataset's reference SIDs)"),
        baselines: str = typer.Option("", "--baselines", help="baselines artifact to report beside the model"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `evaluate` section is used"),
        max_samples: Optional[int] = typer.Option(None, "--max-samples", help="direct mode on the first N samples"),
        thinking_samples: Optional[int] = typer.Option(None, "--thinking-samples", help="-1 = as direct, 0 = off"),
        best_of_n: Optional[int] = typer.Option(None, "--best-of-n", help="sampled traces per sample (0 = off)"),
        add_missing_sid_tokens: bool = typer.Option(False, "--add-missing-sid-tokens",
                                                    help="smoke test of an un-aligned model (random SID embeddings)"),
    ) -> None:
        """Full-catalogue constrained decoding: metrics, predictions and a report."""
        from ..artifacts import ArtifactError, open_artifact
        from ..cli import fail
        from ..sid import SIDError
        from .config import EvaluateConfig
        from .errors import EvaluationError
        from .score import flat_metrics
        from .stage import run

        try:
            cfg = EvaluateConfig.build(section(config, "evaluate"), source=config or "<cli>", max_samples=max_samples,
                                       thinking_samples=thinking_samples, best_of_n=best_of_n,
                                       add_missing_sid_tokens=add_missing_sid_tokens or None)
            art = run(cfg, open_artifact(dataset, kind="dataset"), open_artifact(sids, kind="sids") if sids else None,
                      model, open_artifact(baselines, kind="baselines") if baselines else None, out)
        except (ConfigError, ArtifactError, EvaluationError, SIDError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(flat_metrics(art), indent=2))
        typer.echo(f"report: {art.path / 'report.html'}")
