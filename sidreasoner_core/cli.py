"""`sidreasoner` command line: one sub-command per stage plus the pipeline commands.

Each stage package contributes its commands through `register(app)` in its
`cli.py`, so this file only lists them. The group they hang on (`CommandGroup`) gives every
command the same failure behaviour: a user-facing failure is one `error:` line and a non-zero
exit (2: bad input, config or output path; 1: the environment -- disk, object store -- or an
internal error), the traceback only with `--verbose`; `--force` lets a stage replace a foreign
output path (never its input); a stage's `--out` is checked before any work starts.
"""
from __future__ import annotations

import errno
import importlib
import inspect
import logging
import traceback
import typing
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

# Commands whose --out is one artifact (pipeline `run --out` is a folder of run directories).
ARTIFACT_COMMANDS = {"data", "sids", "enrich", "align", "coldstart", "grpo", "evaluate", "baselines"}
_VERBOSE = False

_OS_HINTS = {
    errno.ENOSPC: "no space left on device; free some space or choose another --out",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another --out",
    errno.EROFS: "read-only file system; choose a writable --out",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
}


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the command line."""
    from .storage import StorageError

    if isinstance(exc, OSError) and not isinstance(exc, StorageError):
        where = exc.filename or ""
        what = _OS_HINTS.get(exc.errno, exc.strerror or str(exc))
        return 1, f"{where}: {what}" if where else what
    if isinstance(exc, StorageError):
        return 1, str(exc)
    if isinstance(exc, MemoryError):
        return 1, "out of memory"
    if type(exc).__module__.startswith("sidreasoner_core") and isinstance(exc, (ValueError, RuntimeError)):
        return 2, str(exc)  # the package's own errors: messages name file, line, field or URI
    if isinstance(exc, UnicodeDecodeError):
        return 2, f"invalid UTF-8 ({exc})"
    return 1, f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)"


def one_line(message: str) -> str:
    """Multi-line messages (config errors list every field) joined on one line."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    line = parts[0] if parts else ""
    for part in parts[1:]:
        line += (" " if line.endswith(":") else "; ") + part
    return line


def _with_shared_options(name: str, callback):
    """The command's callback with `--verbose` (every command) and `--force` (artifact commands) added
    to its signature; before it runs, its `--config` is validated whole and its `--out` checked (not
    its input, nothing foreign there)."""
    sig = inspect.signature(callback, eval_str=True)
    hints = typing.get_type_hints(callback)
    kw = inspect.Parameter.KEYWORD_ONLY
    added = []
    if "verbose" not in sig.parameters:
        added.append(inspect.Parameter("verbose", kw, annotation=bool, default=typer.Option(
            False, "--verbose", "-v", help="debug logging; the traceback of an error")))
    if name in ARTIFACT_COMMANDS and "force" not in sig.parameters:
        added.append(inspect.Parameter("force", kw, annotation=bool, default=typer.Option(
            False, "--force", help="replace whatever is at --out (an input is never replaced)")))
    own = list(sig.parameters.values())
    shared = {p.name for p in added}
    guard_out = name in ARTIFACT_COMMANDS and "out" in sig.parameters

    def wrapped(**kwargs):
        global _VERBOSE
        from . import artifacts
        from .storage import is_s3

        flags = {k: kwargs.pop(k) if k in shared else kwargs.get(k, False) for k in ("verbose", "force")}
        if flags["verbose"]:
            _VERBOSE = True
            logging.getLogger().setLevel(logging.DEBUG)
        if flags["force"] and name in ARTIFACT_COMMANDS:
            artifacts.set_force(True)
        if isinstance(kwargs.get("config"), str) and kwargs["config"]:
            # the whole config, before any work or folder: a typo'd section or a bad value anywhere
            from .stages import validate_pipeline_config

            validate_pipeline_config(kwargs["config"], name=kwargs["config"])
        if guard_out and kwargs.get("out"):
            inputs = [v for k, v in kwargs.items()
                      if k != "out" and isinstance(v, str) and v and (is_s3(v) or Path(v).exists())]
            artifacts.check_output(kwargs["out"], None, inputs)
        return callback(**kwargs)

    # own parameters first (keyword-only ones stay last), then the shared ones
    wrapped.__signature__ = sig.replace(parameters=sorted(own, key=lambda p: p.kind == kw) + added)
    wrapped.__annotations__ = {**hints, **{p.name: bool for p in added}}
    wrapped.__name__, wrapped.__doc__ = callback.__name__, callback.__doc__
    return wrapped


class CommandGroup(TyperGroup):
    """The root group: one `error:` line for every failure that reaches it."""

    def invoke(self, ctx):
        from . import artifacts

        global _VERBOSE
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.secho("error: interrupted", fg=typer.colors.RED, err=True)
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 -- the one place that turns failures into a line
            code, message = describe(exc)
            if _VERBOSE:
                traceback.print_exc()
            typer.secho(f"error: {one_line(message)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code)
        finally:
            artifacts.set_force(False)
            _VERBOSE = False


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=CommandGroup, pretty_exceptions_enable=False,
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
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging; tracebacks on errors")) -> None:
    global _VERBOSE
    _VERBOSE = _VERBOSE or verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a stage not built yet
        if _exc.name and _name.startswith(_exc.name):
            continue
        raise
    _mod.register(app)

for _info in app.registered_commands:
    _info.callback = _with_shared_options(_info.name or _info.callback.__name__, _info.callback)


def fail(message: str) -> None:
    """Print a clear error and exit 2 (bad input), no traceback."""
    typer.secho(f"error: {one_line(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
