"""The config a pipeline run uses: a named preset, the run's JSON override merged on top, and the
GPU count the pods get written into every training section.

`preset` names the base ("none" for the library's defaults, said explicitly); `config_json` only
overrides fields of it, so `{}` means "the preset as shipped", never silently the library defaults.
`train_gpus` is the one GPU count of a run: the pipeline sets it as the accelerator limit of the
training pods and, here, as the number of processes their launcher starts, so the two cannot differ.
"""
from __future__ import annotations

import copy
import json

from .config import ConfigError, list_presets, load_mapping
from .stages import validate_pipeline_config

NO_PRESET = "none"
# Where a training section keeps its process count (one process per GPU).
GPU_FIELDS = (("align", "train"), ("coldstart", "train"), ("grpo", "cluster"))


def merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_train_gpus(config: dict, train_gpus: int) -> dict:
    """`config` with `num_gpus = train_gpus` in every training section."""
    if train_gpus < 1:
        raise ConfigError(f"train_gpus must be >= 1, got {train_gpus}")
    out = copy.deepcopy(config)
    for section, sub in GPU_FIELDS:
        node = out.setdefault(section, {}) or {}
        out[section] = node
        node.setdefault(sub, {})
        node[sub] = {**(node[sub] or {}), "num_gpus": int(train_gpus)}
    return out


def resolve(preset: str, config_json: str = "{}", train_gpus: int = 0) -> dict:
    """The validated pipeline config of a run (train_gpus 0: the preset's own GPU counts)."""
    if not preset:
        raise ConfigError(f"preset: name one of {list_presets()} (or '{NO_PRESET}' for the library defaults)")
    if preset != NO_PRESET and preset not in list_presets():
        raise ConfigError(f"preset {preset!r}: not a shipped preset ({list_presets()}; '{NO_PRESET}' for defaults)")
    base = {} if preset == NO_PRESET else load_mapping(preset)
    override = load_mapping(config_json or "{}")
    config = merge(base, override)
    if train_gpus:
        config = with_train_gpus(config, train_gpus)
    return validate_pipeline_config(config, name=f"preset {preset} + config_json")


def resolve_json(preset: str, config_json: str = "{}", train_gpus: int = 0) -> str:
    return json.dumps(resolve(preset, config_json, train_gpus), sort_keys=True)


def train_gpus_of(config_json: str | dict, section: str) -> int:
    """The process count (= GPUs) a training section of a resolved config asks for."""
    sub = dict(GPU_FIELDS)[section]
    return int(((load_mapping(config_json).get(section) or {}).get(sub) or {}).get("num_gpus") or 1)


def check_stage_gpus(config_json: str | dict, section: str) -> int:
    """Fail a training step at once when its pod sees another GPU count than its config's `num_gpus`."""
    from .training.devices import check_visible_gpus

    return check_visible_gpus(train_gpus_of(config_json, section), section)


def base_model(config: dict) -> str:
    """The model reference alignment starts from under `config` (`align.model`, or its default)."""
    from .stages import config_class

    return config_class("align").build(dict(config.get("align") or {}), source="[align]").model
