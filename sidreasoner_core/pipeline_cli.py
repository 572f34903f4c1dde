"""Pipeline commands: run (local), compile, submit, schedule."""
from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        data: Optional[str] = typer.Option(None, "--data", help="input data (default: the shipped sample)"),
        config: str = typer.Option("default", "--config", help="preset name or config YAML"),
        out: str = typer.Option("runs", "--out", help="where run directories go"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: SQLite in the run dir)"),
    ) -> None:
        """Run the whole pipeline locally through kfp.local on this machine."""
        from pipelines.local import SAMPLE_DATA, run_local

        summary = run_local(data or SAMPLE_DATA, config=config, out_dir=out, tracking_uri=tracking_uri)
        typer.echo(json.dumps(summary, indent=2))
