"""Run the pipeline on this machine through `kfp.local.SubprocessRunner`."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "sample_data" / "Industrial_and_Scientific"


def run_local(data_uri: str | os.PathLike = SAMPLE_DATA, config: str | dict | None = "default",
              out_dir: str | os.PathLike = "runs", tracking_uri: str | None = None,
              category: str = "", experiment: str = "sidreasoner", model_name: str = "sidreasoner") -> dict:
    """Run the whole pipeline locally; returns a summary (paths of outputs, tracking URI)."""
    from kfp import local

    from sidreasoner_core.stages import validate_pipeline_config
    from pipelines.sidreasoner import sidreasoner_pipeline

    # Everything is checked before the run folder exists: a typo leaves nothing behind.
    config_json = json.dumps(validate_pipeline_config(config, name=str(config)))
    from sidreasoner_core.data.errors import DataError
    from sidreasoner_core.storage import is_s3

    if not is_s3(data_uri) and not Path(data_uri).exists():
        raise DataError(f"{data_uri}: input does not exist")
    out = Path(out_dir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    root = out / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.time()
    sidreasoner_pipeline(data_uri=str(data_uri), category=category, config_json=config_json,
                                tracking_uri=tracking_uri, experiment=experiment, model_name=model_name)
    summary = {
        "run_dir": str(out),
        "pipeline_root": str(root),
        "tracking_uri": tracking_uri,
        "wall_s": round(time.time() - started, 1),
        "artifacts": find_artifacts(root),
        "reports": sorted(str(p) for p in root.rglob("report*") if p.is_file()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def find_artifacts(root: Path) -> dict[str, dict]:
    """`task/output` -> {path, kind} for every finished artifact under a local pipeline root."""
    found = {}
    for manifest in sorted(root.rglob("manifest.json")):
        art_dir = manifest.parent
        kind = json.loads(manifest.read_text()).get("kind", "?")
        found[f"{art_dir.parent.name}/{art_dir.name}"] = {"path": str(art_dir), "kind": kind}
    return found
