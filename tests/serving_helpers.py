"""A packaged (MLflow pyfunc) model for the serving tests: the tiny model with SID tokens and the
shipped sample's catalogue (collision-free reference SIDs), saved once per session."""
from __future__ import annotations

import pytest

from eval_helpers import eval_model_dir, eval_sids  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def served_model_dir(sample_dataset, eval_sids, eval_model_dir, tmp_path_factory):  # noqa: F811
    from sidreasoner_core.serving.config import ServingConfig
    from sidreasoner_core.serving.package import catalogue_rows, save_pyfunc

    path = tmp_path_factory.mktemp("served") / "pyfunc"
    save_pyfunc(path, eval_model_dir, catalogue_rows(sample_dataset, eval_sids), ServingConfig(max_history=20))
    return path


@pytest.fixture(scope="session")
def test_histories(sample_dataset):
    """Real histories (item ids) of the Industrial sample's test split."""
    from sidreasoner_core.dataset import read_samples

    return [list(h) for h in read_samples(sample_dataset.path, "test")["history"]]
