"""`sidreasoner recommend` (batch scoring) and `sidreasoner package` (a model as a servable MLflow model)."""
from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    def recommend_cmd(
        model: str = typer.Option(..., "--model", help="MLflow model: models:/sidreasoner@champion, runs:/..., s3:// or a directory"),
        input: str = typer.Option(..., "--input", help="parquet with a `history` column (list of item ids); other columns are kept"),
        output: str = typer.Option(..., "--output", help="parquet written: the input plus `recommendations` and `reasoning`"),
        k: Optional[int] = typer.Option(None, "--k", help="items per history (default: the model's)"),
        mode: Optional[str] = typer.Option(None, "--mode", help="direct | thinking (default: the model's)"),
        chunk_rows: int = typer.Option(256, "--chunk-rows", min=1, help="rows per resumable chunk"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI for models:/ and runs:/"),
    ) -> None:
        """Batch recommendations for a parquet of histories (resumable; progress bar)."""
        from mlflow.exceptions import MlflowException

        from ..cli import fail
        from .batch import BatchError, load_recommender, recommend_file

        try:
            rec = load_recommender(model, tracking_uri)
            summary = recommend_file(rec, input, output, k=k, mode=mode, chunk_rows=chunk_rows)
        except (BatchError, MlflowException, FileNotFoundError, OSError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(summary, indent=2))

    @app.command("package")
    def package_cmd(
        model: str = typer.Option(..., "--model", help="model artifact (align/coldstart/grpo output)"),
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (item ids and titles)"),
        out: str = typer.Option(..., "--out", help="output: the MLflow pyfunc model directory (an artifact)"),
        sids: str = typer.Option(..., "--sids", help="sids artifact (the catalogue the model was trained on)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `serving` section is used"),
    ) -> None:
        """Package a trained model with its catalogue as an MLflow pyfunc model (`mlflow models serve -m DIR`)."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from ..config import ConfigError
        from ..sid import SIDError
        from .package import step

        try:
            values = step(config or "", model, dataset, sids, out)   # a preset name, YAML path or JSON
        except (ConfigError, ArtifactError, SIDError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(values))
