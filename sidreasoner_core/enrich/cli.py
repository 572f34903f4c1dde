from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import ConfigError, section


def register(app: typer.Typer) -> None:
    @app.command("enrich")
    def enrich_cmd(
        dataset: str = typer.Option(..., "--dataset", help="dataset artifact (items + samples)"),
        sids: str = typer.Option(..., "--sids", help="sids artifact (sids.parquet)"),
        out: str = typer.Option(..., "--out", help="output corpus artifact directory (local or s3://)"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `enrich` section is used"),
        teacher: Optional[str] = typer.Option(None, "--teacher", help="offline|openai"),
        backend: Optional[str] = typer.Option(None, "--backend", help="async|ray"),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (…/v1)"),
        model: Optional[str] = typer.Option(None, "--model", help="teacher model name"),
        api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="env var holding the API key"),
        concurrency: Optional[int] = typer.Option(None, "--concurrency"),
        max_items: Optional[int] = typer.Option(None, "--max-items"),
        max_user_samples: Optional[int] = typer.Option(None, "--max-user-samples"),
        cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="resumable response cache directory"),
    ) -> None:
        """Teacher enrichment: SID-centred item paragraphs + user reasoning traces (corpus artifact)."""
        from ..artifacts import ArtifactError
        from ..cli import fail
        from ..sid import SIDError
        from .client import TeacherError
        from .config import EnrichConfig
        from .inputs import EnrichError
        from .stage import metrics_of, run

        try:
            cfg = EnrichConfig.build(section(config, "enrich"), source=config or "<cli>", teacher=teacher,
                                     backend=backend, base_url=base_url, model=model, api_key_env=api_key_env,
                                     concurrency=concurrency, max_items=max_items,
                                     max_user_samples=max_user_samples, cache_dir=cache_dir)
            art = run(cfg, dataset, sids, out)
        except (EnrichError, ConfigError, ArtifactError, TeacherError, SIDError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(metrics_of(art), indent=2))
