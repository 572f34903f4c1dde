import pytest

from sidreasoner_core.data.config import DataConfig
from sidreasoner_core.data.errors import DataError
from sidreasoner_core.data.merge import merge
from sidreasoner_core.dataset import read_items, read_samples
from sidreasoner_core.data.stage import run

from conftest import SAMPLE


def test_merge_namespaces_ids_and_keeps_every_row(sample_dataset, tmp_path):
    other = run(DataConfig(category="Other_Category"), SAMPLE, tmp_path / "other")
    merged = merge([sample_dataset, other], tmp_path / "merged")
    items, samples = read_items(merged.path), read_samples(merged.path)
    assert len(items) == 800 and items["item_id"].is_unique
    assert set(items["category"]) == {"Industrial_and_Scientific", "Other_Category"}
    assert len(samples) == 2 * (249 + 103 + 123)
    known = set(items["item_id"])
    assert all(h in known for hist in samples["history"] for h in hist)
    assert samples["target"].isin(known).all()
    assert [p["uri"] for p in merged.manifest["parents"]] == [sample_dataset.uri, other.uri]


def test_merge_refuses_the_same_category_twice(sample_dataset, tmp_path):
    with pytest.raises(DataError, match="given twice"):
        merge([sample_dataset, sample_dataset], tmp_path / "m")
