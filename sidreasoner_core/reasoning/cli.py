from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("coldstart")
    def coldstart_cmd(
        model: str = typer.Option(..., "--model", help="aligned model artifact, HF dir, or model reference"),
        sids: str = typer.Option(..., "--sids", help="sids artifact (sids.parquet)"),
        corpus: str = typer.Option(..., "--corpus", help="corpus artifact with user_reasoning.parquet"),
        out: str = typer.Option(..., "--out", help="output model artifact directory (local or s3://)"),
        dataset: str = typer.Option("", "--dataset", help="dataset artifact (lineage only)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `coldstart` section is used"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="bound the SFT (overrides train.max_steps)"),
        tracking_uri: str = typer.Option("", "--tracking-uri", help="MLflow tracking URI (empty: off)"),
    ) -> None:
        """Cold-start reasoning activation: one epoch of SFT on <think>reasoning</think> SID targets."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from ..config import ConfigError, section
        from ..sid import SIDError
        from .samples import ReasoningDataError
        from .stage import coldstart_step

        overrides = {}
        if max_steps is not None:
            overrides["train"] = {**section(config, "coldstart").get("train", {}), "max_steps": max_steps}
        try:
            metrics = coldstart_step(json.dumps({"coldstart": section(config, "coldstart")}), model, dataset, sids,
                                     corpus, out, tracking_uri, **overrides)
        except (ConfigError, ReasoningDataError, ArtifactError, SIDError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))

    @app.command("grpo")
    def grpo_cmd(
        model: str = typer.Option(..., "--model", help="cold-started model artifact, HF dir, or model reference"),
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (train prompts, valid subset)"),
        sids: str = typer.Option(..., "--sids", help="sids artifact (sids.parquet)"),
        out: str = typer.Option(..., "--out", help="output model artifact directory (local or s3://)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `grpo` section is used"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps"),
        num_generations: Optional[int] = typer.Option(None, "--num-generations", help="group size G"),
        tracking_uri: str = typer.Option("", "--tracking-uri", help="MLflow tracking URI (empty: off)"),
    ) -> None:
        """GRPO with the stepwise prefix-match + validity reward; logs reward, lengths and Recall@10 curves."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from ..config import ConfigError, section
        from ..sid import SIDError
        from .samples import ReasoningDataError
        from .stage import grpo_step

        try:
            metrics = grpo_step(json.dumps({"grpo": section(config, "grpo")}), model, dataset, sids, out,
                                tracking_uri, max_steps=max_steps, num_generations=num_generations)
        except (ConfigError, ReasoningDataError, ArtifactError, SIDError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
