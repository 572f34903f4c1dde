"""Run the pipeline on this machine through `kfp.local.SubprocessRunner`."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "sample_data" / "Industrial_and_Scientific"   # 400 items: tests, smoke runs
MAIN_DATA = REPO_ROOT / "sample_data" / "full" / "Industrial_and_Scientific"   # the whole category: `make run`


def run_local(data_uri: str | os.PathLike = SAMPLE_DATA, config: str | dict | None = "default",
              out_dir: str | os.PathLike = "runs", tracking_uri: str | None = None,
              category: str = "", experiment: str = "sidreasoner", model_name: str = "sidreasoner",
              cache: bool = False) -> dict:
    """Run the whole pipeline locally; returns a summary (paths of outputs, tracking URI).

    `config` is a preset name (passed as the pipeline's `preset`) or a config file/JSON/dict (passed
    whole as `config_json` over preset "none"). The MLflow store is `<out_dir>/mlflow.db`, shared
    by the runs of one `out_dir`. With `cache`, KFP's local cache under `<out_dir>/.kfp_cache` serves
    steps whose inputs did not change (as on the cluster: the data step's key holds the input's
    fingerprint, no key holds the run id)."""
    from kfp import local

    from sidreasoner_core.config import list_presets
    from sidreasoner_core.run_config import NO_PRESET, resolve, train_gpus_of
    from sidreasoner_core.run_context import RUN_ID_ENV
    from sidreasoner_core.training.runtime import CPU_MALLOC_ENV
    from pipelines.sidreasoner import sidreasoner_pipeline

    # Everything is checked before the run folder exists: a typo leaves nothing behind.
    if isinstance(config, str) and config in list_presets():
        preset, config_json = config, "{}"
    else:
        from sidreasoner_core.stages import validate_pipeline_config

        preset, config_json = NO_PRESET, json.dumps(validate_pipeline_config(config, name=str(config)))
    resolved = resolve(preset, config_json)
    from sidreasoner_core.data.errors import DataError
    from sidreasoner_core.storage import is_s3

    if not is_s3(data_uri) and not Path(data_uri).exists():
        raise DataError(f"{data_uri}: input does not exist")
    base = Path(out_dir).resolve()
    out = base / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
    root = out / "pipeline_root"
    for name, value in CPU_MALLOC_ENV.items():   # the step processes start with them (as in the images)
        os.environ.setdefault(name, value)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               enable_caching=cache, cache_root=str(base / ".kfp_cache"))
    started = time.time()
    # The run id reaches every step as an env var (on the cluster: the pod's pipeline/runid label).
    run_id = f"local-{out.name}-{uuid.uuid4().hex[:8]}"
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id
    try:
        sidreasoner_pipeline(data_uri=str(Path(data_uri).resolve()) if not is_s3(data_uri) else str(data_uri),
                             category=category, preset=preset, config_json=config_json,
                             train_gpus=train_gpus_of(resolved, "align"), tracking_uri=tracking_uri,
                             experiment=experiment, model_name=model_name)
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous
    summary = {
        "run_dir": str(out),
        "run_id": run_id,
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
