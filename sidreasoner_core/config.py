"""Stage configs: pydantic models with documented defaults, loadable from YAML/JSON.

A pipeline config is one mapping with a section per stage (`data`, `sids`, ...);
`section()` takes a stage's part of it so every runner (library, CLI, KFP)
builds the stage config the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StageConfig")

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    pass


def _step_budget(v: int) -> int:
    if v == 0 or v < -1:
        raise ValueError(f"{v} is not a step budget: give a positive number of steps, or -1 to let epochs decide")
    return v


# An optimizer-step budget: > 0 bounds the run, -1 leaves it to the epochs; 0 or other negatives would
# silently train nothing or forever, so they fail validation before any work starts.
StepBudget = Annotated[int, AfterValidator(_step_budget)]


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def build(cls: type[T], data: dict | None = None, source: str = "<config>", **overrides: Any) -> T:
        """Validate `data` merged with non-None `overrides`; errors name the field and source.
        A mapping override merges into the section's sub-mapping (`train={"max_steps": 5}`)."""
        merged = dict(data or {})
        for key, value in overrides.items():
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
                if value:
                    merged[key] = {**(merged.get(key) or {}), **value}
            elif value is not None:
                merged[key] = value
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            lines = [f"{source}: invalid {cls.__name__}:"]
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                lines.append(f"  field '{field}': {err['msg']}")
            raise ConfigError("\n".join(lines)) from None


def load_mapping(source: str | Path | dict | None) -> dict:
    """A dict from a YAML/JSON file, a preset name, a JSON string, or a dict."""
    if source is None or source == "":
        return {}
    if isinstance(source, dict):
        return source
    text = str(source)
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config JSON: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON: top level must be a mapping")
        return data
    path = Path(text)
    if not path.exists() and (PRESETS_DIR / f"{text}.yaml").exists():
        path = PRESETS_DIR / f"{text}.yaml"
    if not path.exists():
        raise ConfigError(f"{text}: config file or preset not found (presets: {list_presets()})")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def section(source: str | Path | dict | None, name: str) -> dict:
    """The `name` section of a pipeline config. (The command line validates the whole config --
    every section, unknown ones too -- before a command starts: `stages.validate_pipeline_config`.)"""
    data = load_mapping(source)
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config section '{name}' must be a mapping")
    return value


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
