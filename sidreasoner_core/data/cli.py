from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import ConfigError, section


def register(app: typer.Typer) -> None:
    @app.command("data")
    def data_cmd(
        input: str = typer.Option(..., "--input", help=(
            "input directory: processed CSV (train/valid/test.csv + item.json [+ index.json]) or Amazon raw "
            "(one reviews *.json[l][.gz] + one meta*.json[l][.gz], 2018 or 2023 fields)")),
        out: str = typer.Option(..., "--out", help="output artifact directory (local or s3://)"),
        format: str = typer.Option("auto", "--format", help="auto|csv|amazon2018|amazon2023"),
        config: Optional[str] = typer.Option(None, "--config", help="pipeline config YAML/preset; its `data` section is used"),
        k_core: Optional[int] = typer.Option(None, "--k-core"),
        skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help=(
            "quarantine bad lines (malformed, invalid UTF-8, implausible timestamps) into quarantine.jsonl, "
            "counted by reason, instead of failing")),
        date_window: Optional[str] = typer.Option(None, "--date-window", metavar="FIRST:LAST", help=(
            "keep reviews from FIRST to LAST (YYYY-MM-DD, inclusive, UTC), e.g. 2016-10-01:2018-11-30")),
    ) -> None:
        """Run the data stage alone: items.parquet + samples.parquet + stats."""
        from ..cli import fail
        from .config import DataConfig
        from .errors import DataError
        from .stage import run

        try:
            window = None
            if date_window:
                if date_window.count(":") != 1:
                    raise ConfigError(f"--date-window {date_window!r}: expected FIRST:LAST, e.g. 2016-10-01:2018-11-30")
                window = date_window.split(":")
            cfg = DataConfig.build(section(config, "data"), source=config or "<cli>", format=format,
                                   k_core=k_core, skip_bad_lines=skip_bad_lines or None, date_window=window)
            art = run(cfg, input, out)
        except (DataError, ConfigError) as exc:
            fail(str(exc))
        typer.echo(json.dumps(art.manifest["stats"], indent=2))
