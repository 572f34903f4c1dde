import pytest

from sidreasoner_core.config import ConfigError, list_presets
from sidreasoner_core.stages import SECTIONS, validate_pipeline_config


def test_shipped_presets_validate_every_section():
    assert {"default", "smoke", "cluster"} <= set(list_presets())
    for preset in list_presets():
        assert set(validate_pipeline_config(preset, name=preset)) <= set(SECTIONS)


def test_bad_field_is_named_with_its_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("align:\n  train:\n    max_steps: many\n")
    with pytest.raises(ConfigError, match=r"(?s)\[align\].*train\.max_steps"):
        validate_pipeline_config(str(path), name=str(path))


def test_unknown_section_and_missing_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("algin: {}\n")
    with pytest.raises(ConfigError, match="unknown section.*algin"):
        validate_pipeline_config(str(path))
    with pytest.raises(ConfigError, match="not found"):
        validate_pipeline_config(str(tmp_path / "nope.yaml"))
