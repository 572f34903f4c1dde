"""Package a trained model as the served model: an MLflow pyfunc model directory that is also the
pipeline's artifact (kind "mlflow_model"), so registration can point the model registry at it
where it already lies (no second copy through the tracking server).

    <artifact>/MLmodel, python_model.pkl, input_example.json, serving_input_example.json, ...
    <artifact>/artifacts/bundle/{model/, catalogue.parquet, serving.json}
    <artifact>/manifest.json   (the pipeline's manifest; MLflow ignores it)
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..artifacts import Artifact, open_artifact, write_artifact
from .config import ServingConfig

log = logging.getLogger(__name__)

KIND = "mlflow_model"


def catalogue_rows(dataset: Artifact, sids: Artifact) -> list[dict]:
    """item_id, title, sid of every item of the sids artifact, titles from the dataset."""
    from ..dataset import item_titles, read_items
    from ..sid import read_sid_table

    sid_by_item = read_sid_table(sids.path).sid_by_item
    titles = item_titles(read_items(dataset.path))
    return [{"item_id": item, "title": titles.get(item, ""), "sid": sid} for item, sid in sorted(sid_by_item.items())]


def requirements() -> list[str]:
    """Pinned requirements of the serving environment (the running one: serve with env manager `local`)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("sidreasoner", "mlflow", "torch", "transformers", "pandas", "pyarrow"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def save_pyfunc(path: Path, model_dir: Path, catalogue: list[dict], config: ServingConfig,
                example_history: list[str] | None = None) -> Path:
    """Write the MLflow pyfunc model directory at `path` (must not exist)."""
    import mlflow.pyfunc
    import pandas as pd

    from .pyfunc import BUNDLE, SIDReasonerModel, signature
    from .recommender import write_bundle

    if not catalogue:
        raise ValueError("package: the catalogue is empty: no item has a SID")
    example = example_history or [catalogue[0]["item_id"]]
    with tempfile.TemporaryDirectory(prefix="sidr-bundle-") as tmp:
        bundle = write_bundle(Path(tmp) / BUNDLE, model_dir, catalogue, config)
        mlflow.pyfunc.save_model(
            path=str(path), python_model=SIDReasonerModel(), artifacts={BUNDLE: str(bundle)},
            signature=signature(config.default_k, config.default_mode),
            input_example=(pd.DataFrame({"history": [example]}), {"k": config.default_k}),
            pip_requirements=requirements())
    return path


def package(config: ServingConfig, model: Artifact, dataset: Artifact, sids: Artifact, out: str | Path) -> Artifact:
    """The served model as a verified artifact at `out`."""
    from ..dataset import read_samples
    from ..models import resolve_model_dir

    catalogue = catalogue_rows(dataset, sids)
    known = {r["item_id"] for r in catalogue}
    test = read_samples(dataset.path, "test")
    example = next((list(h) for h in test["history"] if len(h) and set(h) <= known), None)
    with write_artifact(out, kind=KIND, config=config, parents=[model, dataset, sids],
                        extra={"items": len(catalogue)}) as d:
        staged = d / ".pyfunc"
        save_pyfunc(staged, resolve_model_dir(str(model.path)), catalogue, config, example)
        for entry in staged.iterdir():   # the MLflow model is the artifact's root
            shutil.move(str(entry), d / entry.name)
        staged.rmdir()
    return open_artifact(out, kind=KIND)


def step(config_json: str, model_uri: str, dataset_uri: str, sids_uri: str, out: str) -> dict:
    """The pipeline step: `serving` section of the config."""
    from ..config import section
    from ..dataset import KIND as DATASET_KIND
    from ..sid import KIND as SIDS_KIND

    config = ServingConfig.build(section(config_json, "serving"), source="config_json [serving]")
    art = package(config, open_artifact(model_uri, kind="model"), open_artifact(dataset_uri, kind=DATASET_KIND),
                  open_artifact(sids_uri, kind=SIDS_KIND), out)
    log.info("packaged %s items with the model at %s", art.manifest["items"], art.uri)
    return {"catalogue_items": float(art.manifest["items"])}
