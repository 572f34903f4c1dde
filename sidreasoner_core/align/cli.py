from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("align")
    def align_cmd(
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (data stage output)"),
        sids: str = typer.Option(..., "--sids", help="sids artifact (SID stage output)"),
        out: str = typer.Option(..., "--out", help="output model artifact directory (local or s3://)"),
        corpus: str = typer.Option("", "--corpus", help="enrichment corpus artifact (tasks 7-8); optional"),
        model: Optional[str] = typer.Option(None, "--model", help="model reference: tiny-qwen3, smollm2, dir, "
                                            "*.gguf, s3://, Hub id"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `align` section is used"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="bound the training steps"),
        tracking_uri: str = typer.Option("", "--tracking-uri", help="MLflow tracking URI (empty: off)"),
    ) -> None:
        """Multi-task SID-language alignment SFT: model/ + metrics.json + sid_tokens.json."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from ..sid import SIDError
        from ..training.sft import SFTDataError
        from .stage import AlignError, step
        from .tasks import TaskDataError

        try:
            metrics = step(config or "", dataset, sids, corpus, out, model_ref=model or "",
                           tracking_uri=tracking_uri, max_steps=max_steps)
        except (ConfigError, ArtifactError, AlignError, TaskDataError, SFTDataError, SIDError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
