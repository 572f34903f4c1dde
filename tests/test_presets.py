import pytest

from sidreasoner_core.config import ConfigError, list_presets
from sidreasoner_core.stages import SECTIONS, validate_pipeline_config


def test_shipped_presets_validate_every_section():
    assert {"default", "smoke", "cluster", "quality"} <= set(list_presets())
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


def test_run_refuses_a_bad_config_before_any_step(tmp_path):
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text("grpo:\n  num_generation: 4\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "grpo" in result.output and "num_generation" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("manifest.json"))
