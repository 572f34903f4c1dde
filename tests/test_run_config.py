"""A run's config (preset + override + train_gpus), the input fingerprint, the GPU check."""
import json
import os
import shutil

import pytest

from conftest import REPO
from sidreasoner_core import run_config
from sidreasoner_core.config import ConfigError
from sidreasoner_core.fingerprint import fingerprint
from sidreasoner_core.stages import validate_pipeline_config
from sidreasoner_core.storage import put_bytes
from sidreasoner_core.training.devices import DeviceMismatch, check_visible_gpus

SAMPLE = REPO / "sample_data" / "Industrial_and_Scientific"


def test_empty_override_is_the_named_preset_not_library_defaults():
    assert run_config.resolve("smoke", "{}") == validate_pipeline_config("smoke")
    assert run_config.resolve(run_config.NO_PRESET, "{}") == {}
    with pytest.raises(ConfigError, match="preset: name one of"):
        run_config.resolve("", "{}")
    with pytest.raises(ConfigError, match="preset 'smokey': not a shipped preset"):
        run_config.resolve("smokey", "{}")


def test_override_merges_field_by_field():
    cfg = run_config.resolve("cluster", json.dumps({"grpo": {"cluster": {"precision": "fp32"}}}))
    assert cfg["grpo"]["cluster"]["precision"] == "fp32"
    assert cfg["grpo"]["cluster"]["deepspeed"] == "zero3"  # the rest of the preset's section stays
    with pytest.raises(ConfigError, match="align"):
        run_config.resolve("cluster", json.dumps({"align": {"no_such_field": 1}}))


def test_train_gpus_is_the_process_count_of_every_training_section():
    cfg = run_config.resolve("cluster", "{}", train_gpus=4)
    assert [run_config.train_gpus_of(cfg, s) for s in ("align", "coldstart", "grpo")] == [4, 4, 4]
    assert run_config.train_gpus_of(run_config.resolve("cluster"), "grpo") == 8  # 0: the preset's own
    with pytest.raises(ConfigError, match="train_gpus must be >= 1"):
        run_config.with_train_gpus({}, -1)


def test_training_step_fails_on_a_device_mismatch():
    assert check_visible_gpus(8, "grpo", visible=8) == 8
    assert check_visible_gpus(1, "align", visible=0) == 0  # a one-process CPU run
    with pytest.raises(DeviceMismatch, match=r"grpo: the run asks for train_gpus=8 .* sees 4 CUDA device"):
        check_visible_gpus(8, "grpo", visible=4)
    with pytest.raises(DeviceMismatch, match="sees 0 CUDA"):
        check_visible_gpus(8, "align", visible=0)
    with pytest.raises(DeviceMismatch):
        run_config.check_stage_gpus(run_config.resolve("cluster", "{}", train_gpus=2), "coldstart")


def test_local_fingerprint_follows_names_sizes_and_times(tmp_path):
    data = tmp_path / "in"
    shutil.copytree(SAMPLE, data)
    first = fingerprint(data)
    assert first.startswith("sha256:") and fingerprint(data) == first
    some = next(p for p in sorted(data.rglob("*")) if p.is_file())
    st = some.stat()
    os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = fingerprint(data)
    assert touched != first
    (data / "new.csv").write_text("x\n")
    assert fingerprint(data) not in (first, touched)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fingerprint(tmp_path / "missing")


def test_s3_fingerprint_follows_etags(s3_bucket):
    put_bytes(f"s3://{s3_bucket}/week/items.csv", b"a,b\n1,2\n")
    put_bytes(f"s3://{s3_bucket}/week2/items.csv", b"other prefix\n")
    first = fingerprint(f"s3://{s3_bucket}/week")
    assert fingerprint(f"s3://{s3_bucket}/week/") == first  # a prefix with or without its slash
    put_bytes(f"s3://{s3_bucket}/week/items.csv", b"a,b\n1,3\n")  # same size, new content: new ETag
    assert fingerprint(f"s3://{s3_bucket}/week") != first
    single = fingerprint(f"s3://{s3_bucket}/week/items.csv")
    assert single.startswith("sha256:")
    with pytest.raises(FileNotFoundError, match="no input files"):
        fingerprint(f"s3://{s3_bucket}/nothing-here")


def test_base_model_uri_for_lineage():
    from sidreasoner_core.lineage import model_ref, model_uri

    assert run_config.base_model(run_config.resolve("cluster")) == "Qwen/Qwen3-1.7B"
    assert run_config.base_model({}) == run_config.base_model(run_config.resolve(run_config.NO_PRESET))
    for ref, uri in (("Qwen/Qwen3-1.7B", "hf://Qwen/Qwen3-1.7B"), ("tiny-qwen3", "builtin://tiny-qwen3"),
                     ("small-qwen3@3", "builtin://small-qwen3@3"), ("smollm2", "builtin://smollm2"),
                     ("s3://b/models/x", "s3://b/models/x")):
        assert model_uri(ref) == uri and model_ref(uri) == ref
    with pytest.raises(ValueError, match="model reference is empty"):
        model_uri("")
