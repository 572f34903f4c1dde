from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import ConfigError, section


def register(app: typer.Typer) -> None:
    @app.command("sids")
    def sids_cmd(
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact directory (the data stage's output)"),
        out: str = typer.Option(..., "--out", help="output artifact directory (local or s3://)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `sids` section is used"),
        from_index: Optional[bool] = typer.Option(None, "--from-index/--train",
                                                  help="take the dataset's reference SIDs instead of training"),
        collisions: Optional[str] = typer.Option(None, "--collisions", help="resolve|keep|error"),
        encoder: Optional[str] = typer.Option(None, "--encoder", help="sentence-transformers dir, s3:// or 'all-minilm-l6-v2'"),
        embeddings: Optional[str] = typer.Option(None, "--embeddings", help="precomputed embeddings (.npy/.parquet)"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        seed: Optional[int] = typer.Option(None, "--seed"),
    ) -> None:
        """Semantic IDs: embed item texts, train the RQ-VAE, write collision-free SIDs."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from .config import SidsConfig
        from .errors import SidsError
        from .stage import run

        try:
            cfg = SidsConfig.build(section(config, "sids"), source=config or "<cli>", from_index=from_index,
                                   collisions=collisions, encoder=encoder, embeddings=embeddings, epochs=epochs,
                                   seed=seed)
            art = run(cfg, dataset, out)
        except (SidsError, ConfigError, ArtifactError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(art.manifest["metrics"], indent=2, sort_keys=True))
