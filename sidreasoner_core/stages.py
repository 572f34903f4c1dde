"""The pipeline's config sections and the stage config class of each: one place, so a whole
pipeline config can be checked before any step runs (a typo fails in a second, not at step 6)."""
from __future__ import annotations

import importlib

from .config import ConfigError, load_mapping

SECTIONS = {
    "data": "sidreasoner_core.data.config:DataConfig",
    "sids": "sidreasoner_core.sids.config:SidsConfig",
    "enrich": "sidreasoner_core.enrich.config:EnrichConfig",
    "align": "sidreasoner_core.align.config:AlignConfig",
    "coldstart": "sidreasoner_core.reasoning.config:ColdStartConfig",
    "grpo": "sidreasoner_core.reasoning.config:GRPOStageConfig",
    "evaluate": "sidreasoner_core.evaluation.config:EvaluateConfig",
    "baselines": "sidreasoner_core.evaluation.config:BaselinesConfig",
    "serving": "sidreasoner_core.serving.config:ServingConfig",
    "promote": "sidreasoner_core.promotion:PromoteConfig",
}


def config_class(section_name: str):
    module, name = SECTIONS[section_name].split(":")
    return getattr(importlib.import_module(module), name)


def validate_pipeline_config(source, name: str = "<config>") -> dict:
    """Validate every section of a pipeline config; returns the mapping. Unknown sections are errors."""
    data = load_mapping(source)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{name}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    for section_name in SECTIONS:
        value = data.get(section_name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: section '{section_name}' must be a mapping")
        config_class(section_name).build(value, source=f"{name} [{section_name}]")
    return data
