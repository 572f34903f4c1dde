"""`sidreasoner` command line: one sub-command per stage plus the pipeline commands.

Each stage package contributes its commands through `register(app)` in its
`cli.py`, so this file only lists them.
"""
from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="SIDReasoner: reasoning-based generative recommendation over Semantic IDs.")

COMMAND_MODULES = (
    "sidreasoner_core.data.cli",
    "sidreasoner_core.sids.cli",
    "sidreasoner_core.enrich.cli",
    "sidreasoner_core.align.cli",
    "sidreasoner_core.reasoning.cli",
    "sidreasoner_core.evaluation.cli",
    "sidreasoner_core.serving.cli",
    "sidreasoner_core.pipeline_cli",
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a stage not built yet
        if _exc.name and _name.startswith(_exc.name):
            continue
        raise
    _mod.register(app)


def fail(message: str) -> None:
    """Print a clear error and exit 2 (bad input), no traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
