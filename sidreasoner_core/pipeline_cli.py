"""Pipeline commands: run (local), compile, submit, publish, schedule."""
from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        data: Optional[str] = typer.Option(None, "--data", help="input data (default: the shipped Industrial "
                                           "category, sample_data/full; the 400-item test sample is "
                                           "sample_data/Industrial_and_Scientific)"),
        config: str = typer.Option("default", "--config", help="preset name or config YAML"),
        out: str = typer.Option("runs", "--out", help="where run directories go"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: <out>/mlflow.db)"),
        cache: bool = typer.Option(False, "--cache/--no-cache",
                                   help="reuse steps whose inputs did not change (KFP's local cache in <out>/.kfp_cache)"),
    ) -> None:
        """Run the whole pipeline locally through kfp.local on this machine."""
        from pipelines.local import MAIN_DATA, run_local

        from .config import ConfigError

        try:
            summary = run_local(data or MAIN_DATA, config=config, out_dir=out, tracking_uri=tracking_uri, cache=cache)
        except ConfigError as exc:
            from .cli import fail

            fail(str(exc))
        typer.echo(json.dumps(summary, indent=2))
        report = next((r for r in summary["reports"] if r.endswith("report.html")), None)
        typer.echo(f"\nreport: {report or 'none'}\nMLflow: mlflow ui --backend-store-uri {summary['tracking_uri']}"
                   f"  (model sidreasoner@candidate; @champion when it passed the promotion gate)")

    @app.command("rehearse")
    def rehearse_cmd(
        preset: str = typer.Option("cluster", "--preset", help="preset name or config YAML"),
        compiled: Optional[str] = typer.Option(None, "--compiled", help="compiled pipeline YAML (default: sidreasoner)"),
        data: Optional[str] = typer.Option(None, "--data", help="input data directory (default: the shipped sample)"),
        out: str = typer.Option("runs/rehearsal", "--out", help="where rehearsal run directories go"),
        only: Optional[list[str]] = typer.Option(None, "--only", help="run only these tasks (upstream must pass)"),
        timeout_s: float = typer.Option(600, "--timeout", help="per-task time limit, seconds"),
        parallel: int = typer.Option(2, "--parallel", help="tasks run at once where the DAG allows"),
    ) -> None:
        """Run every task of the compiled pipeline as its pod would (image env, placement env, S3 root)."""
        from pipelines import rehearsal

        report = rehearsal.rehearse(preset, compiled or rehearsal.contract.COMPILED / "sidreasoner.yaml",
                                    data or rehearsal.SAMPLE_DATA, out, timeout_s=timeout_s, only=only,
                                    parallel=parallel)
        typer.echo(rehearsal.format_report(report))
        typer.echo(f"report: {report['run_dir']}/report.json")
        raise typer.Exit(0 if report["passed"] else 1)

    register_platform_commands(app)


# --- compile / submit / schedule ------------------------------------------------------------

COMPILED_DIR = "pipelines/compiled"
# Modules of pipelines/ that define no pipeline (placement helpers, the local runner).
_NOT_PIPELINE_MODULES = {"__init__", "local", "placement", "images", "contract", "rehearsal"}
_CRON_FIELDS = (  # KFP's scheduler (robfig/cron) takes 6 fields, seconds first
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def discover_pipelines() -> dict:
    """Every `@dsl.pipeline` defined in a module of `pipelines/`, keyed by pipeline name (sorted)."""
    import importlib
    import pkgutil

    import pipelines
    from kfp.dsl.graph_component import GraphComponent

    found: dict = {}
    for info in sorted(pkgutil.iter_modules(pipelines.__path__), key=lambda m: m.name):
        if info.name in _NOT_PIPELINE_MODULES:
            continue
        module = importlib.import_module(f"pipelines.{info.name}")
        # A module may list its top-level pipelines in PIPELINES (so sub-pipelines used as
        # components are not compiled on their own); otherwise every pipeline in it counts.
        listed = getattr(module, "PIPELINES", None)
        if isinstance(listed, dict):
            listed = list(listed.values())
        for obj in (listed if listed is not None else vars(module).values()):
            if isinstance(obj, GraphComponent):
                found.setdefault(obj.pipeline_spec.pipeline_info.name, obj)
    return dict(sorted(found.items()))


def compile_pipelines(out_dir) -> list:
    """Compile every discovered pipeline to `<out_dir>/<pipeline name>.yaml`; returns the paths."""
    from pathlib import Path

    from kfp import compiler

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in discover_pipelines().items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


def stale_compiled(compiled_dir) -> list[str]:
    """Names of committed YAML files that differ from a fresh compile (missing, changed or orphaned)."""
    import tempfile
    from pathlib import Path

    compiled_dir = Path(compiled_dir)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in compile_pipelines(tmp)}
    committed = {p.name: p.read_bytes() for p in compiled_dir.glob("*.yaml")} if compiled_dir.is_dir() else {}
    problems = [f"{n} (missing)" for n in sorted(fresh.keys() - committed.keys())]
    problems += [f"{n} (out of date)" for n in sorted(fresh.keys() & committed.keys()) if fresh[n] != committed[n]]
    problems += [f"{n} (no pipeline defines it)" for n in sorted(committed.keys() - fresh.keys())]
    return problems


def _reimport_components() -> None:
    """Drop the imported components and pipelines so the next import reads the new image tags."""
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] in ("components", "pipelines")]:
        del sys.modules[name]


def validate_cron(expression: str) -> str:
    """Check a KFP cron expression (6 fields, seconds first, or an @descriptor); returns it stripped.

    Raises ValueError naming the bad field, so `schedule` refuses it before calling the server.
    """
    import re

    expr = " ".join(expression.split())
    if expr.startswith("@"):
        if expr in _CRON_DESCRIPTORS or re.fullmatch(r"@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", expr):
            return expr
        raise ValueError(f"unknown cron descriptor {expr!r} (use one of {sorted(_CRON_DESCRIPTORS)} or '@every 1h30m')")
    fields = expr.split(" ") if expr else []
    if len(fields) != 6:
        hint = f" (did you mean '0 {expr}'? KFP wants seconds first)" if len(fields) == 5 else ""
        raise ValueError(f"cron {expression!r} has {len(fields)} fields; KFP needs 6: "
                         f"second minute hour day-of-month month day-of-week{hint}")
    for field, (name, lo, hi, names) in zip(fields, _CRON_FIELDS):
        for part in field.split(","):
            _check_cron_part(part, name, lo, hi, names, expression)
    return expr


def _check_cron_part(part: str, name: str, lo: int, hi: int, names, expression: str) -> None:
    def bad(why: str):
        return ValueError(f"cron {expression!r}: {name} field {part!r} {why} (allowed {lo}-{hi})")

    def number(text: str) -> int:
        if names and text.upper() in names:
            return names.index(text.upper()) + lo
        if not text.isdigit():
            raise bad(f"has {text!r}, not a number")
        value = int(text)
        if not lo <= value <= hi:
            raise bad(f"value {value} is out of range")
        return value

    base, _, step = part.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        raise bad("has a step that is not a positive integer")
    if base == "?" and name in ("day-of-month", "day-of-week") and not step:
        return
    if base == "*":
        return
    first, dash, last = base.partition("-")
    start = number(first)
    if dash and number(last) < start:
        raise bad("has a range that runs backwards")


def _package_inputs(package) -> dict:
    """The root input parameters of a compiled pipeline: name -> {parameterType, defaultValue?, isOptional?}."""
    import yaml

    with open(package) as fh:
        spec = next(yaml.safe_load_all(fh))
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def parse_params(pairs: list[str], package, extra: Optional[dict] = None) -> dict:
    """Turn `key=value` strings into typed run parameters checked against the compiled pipeline."""
    declared = _package_inputs(package)
    params: dict = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"parameter {pair!r} is not key=value")
        params[key] = raw
    params.update(extra or {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; {package} takes {sorted(declared)}")
    for key, value in list(params.items()):
        kind = declared[key].get("parameterType", "STRING")
        if kind == "STRING" or not isinstance(value, str):
            continue
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"parameter {key}={value!r} is not valid JSON for type {kind}") from None
        ok = {"NUMBER_INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "NUMBER_DOUBLE": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "BOOLEAN": lambda v: isinstance(v, bool), "LIST": lambda v: isinstance(v, list),
              "STRUCT": lambda v: isinstance(v, dict)}.get(kind, lambda v: True)
        if not ok(parsed):
            raise ValueError(f"parameter {key}={value!r} is not a {kind}")
        params[key] = float(parsed) if kind == "NUMBER_DOUBLE" else parsed
    missing = sorted(k for k, d in declared.items()
                     if k not in params and "defaultValue" not in d and not d.get("isOptional"))
    if missing:
        raise ValueError(f"missing required pipeline parameter(s) {missing} (pass --param NAME=VALUE)")
    return params


def _resolve_package(package: Optional[str], pipeline: str):
    from pathlib import Path

    path = Path(package) if package else _repo_root() / COMPILED_DIR / f"{pipeline}.yaml"
    if not path.is_file():
        raise ValueError(f"pipeline package {path} does not exist (run `sidreasoner compile` first)")
    return path


def _extra_params(config: Optional[str], category: Optional[str]) -> dict:
    extra = {}
    if config is not None:  # a preset name is the `preset` parameter; a YAML file the whole config over "none"
        from sidreasoner_core.config import list_presets, load_mapping
        from sidreasoner_core.run_config import NO_PRESET

        if config in list_presets():
            extra["preset"] = config
        else:
            extra.update(preset=NO_PRESET, config_json=json.dumps(load_mapping(config)))
    if category is not None:
        extra["category"] = category
    return extra


def _run_params(package, params: Optional[list[str]], config: Optional[str], category: Optional[str]) -> dict:
    return parse_params(list(params or []), package, _extra_params(config, category))


def kfp_client(host: str, token: Optional[str] = None, sa_token_path: Optional[str] = None,
               namespace: Optional[str] = None):
    """A kfp.Client that authenticates: a bearer token (`--token`, e.g. `kubectl create token` or an
    OIDC token your auth proxy takes) or a Kubernetes service-account token file, re-read on each
    request because the kubelet rotates it (kfp's ServiceAccountTokenVolumeCredentials). A
    multi-user API server also needs the profile namespace: refused here before anything is sent."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    if token and sa_token_path:
        raise ValueError("pass --token or --sa-token, not both")
    credentials = None
    if sa_token_path:
        from pathlib import Path

        if not Path(sa_token_path).is_file():
            raise ValueError(f"service-account token file {sa_token_path} does not exist")
        credentials = ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    client = kfp.Client(host=host, existing_token=token or None, credentials=credentials,
                        namespace=namespace or "kubeflow")
    if not namespace and client.get_kfp_healthz().multi_user:
        raise ValueError(f"{host} is a multi-user KFP: pass --namespace <your profile namespace>")
    return client


def git_version(repo=None) -> tuple[str, str]:
    """(version name, full SHA) of the checkout: the SHA names the pipeline version `publish` uploads.

    Refuses a checkout with uncommitted changes to tracked files: that package is no commit's."""
    import subprocess

    repo = repo or _repo_root()
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ValueError(f"{repo} is not a git checkout ({exc}); pass --version-name") from None
    if dirty:  # porcelain lines: two status columns, a space, the path
        files = ", ".join(line[3:] for line in dirty[:5])
        raise ValueError(f"uncommitted changes ({files}): commit them, or pass --version-name")
    return sha[:12], sha


def _version_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_version(client, pipeline: str, version: str):
    """(pipeline id, version) of a published version by names, or (pipeline id or None, None)."""
    pipeline_id = client.get_pipeline_id(pipeline)
    if pipeline_id is None:
        return None, None
    found = client.list_pipeline_versions(pipeline_id, filter=_version_filter(version)).pipeline_versions or []
    return pipeline_id, (found[0] if found else None)


def publish_pipeline(client, package, pipeline: str, version: str, description: str = "",
                     namespace: Optional[str] = None) -> dict:
    """Upload `package` as version `version` of pipeline `pipeline` (created when missing, so every
    version has a commit's name); the same version again is left as it is."""
    from kfp_server_api import V2beta1Pipeline

    pipeline_id, existing = find_version(client, pipeline, version)
    created = pipeline_id is None
    if created:
        pipeline_id = client.pipelines.pipeline_service_create_pipeline(
            pipeline=V2beta1Pipeline(display_name=pipeline, description=description or None,
                                     namespace=namespace)).pipeline_id
    if existing is None:
        existing = client.upload_pipeline_version(str(package), pipeline_version_name=version,
                                                  pipeline_id=pipeline_id, description=description or None)
    return {"pipeline_id": pipeline_id, "pipeline_created": created, "version_id": existing.pipeline_version_id,
            "version": version, "package": str(package)}


def submit_run(host: str, package, params: dict, experiment: str = "sidreasoner", run_name: Optional[str] = None,
               namespace: Optional[str] = None, pipeline_root: Optional[str] = None,
               service_account: Optional[str] = None, enable_caching: Optional[bool] = None,
               existing_token: Optional[str] = None, sa_token_path: Optional[str] = None) -> dict:
    """Create one run of a compiled pipeline on a KFP API server; returns ids."""
    client = kfp_client(host, existing_token, sa_token_path, namespace)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace,
        pipeline_root=pipeline_root, enable_caching=enable_caching, service_account=service_account)
    return {"run_id": result.run_id, "host": host, "package": str(package), "parameters": sorted(params)}


def schedule_run(host: str, pipeline: str, version: str, params: list[str], cron: str, name: str,
                 experiment: str = "sidreasoner", namespace: Optional[str] = None, max_concurrency: int = 1,
                 catchup: bool = False, start_time: Optional[str] = None, end_time: Optional[str] = None,
                 pipeline_root: Optional[str] = None, service_account: Optional[str] = None,
                 existing_token: Optional[str] = None, sa_token_path: Optional[str] = None,
                 extra: Optional[dict] = None) -> dict:
    """Create a recurring run (cron, 6 fields seconds first) of a published pipeline version: each
    run takes that version's spec from the server, so what runs is the version, not a copy frozen
    into the schedule. Parameters are checked against the version's own spec."""
    import tempfile

    import yaml

    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    client = kfp_client(host, existing_token, sa_token_path, namespace)
    pipeline_id, found = find_version(client, pipeline, version)
    if found is None:
        raise ValueError(f"pipeline {pipeline!r} has no version {version!r} on {host}: "
                         f"run `sidreasoner publish` for that commit first")
    spec = client.get_pipeline_version(pipeline_id, found.pipeline_version_id).pipeline_spec
    spec = spec.get("pipeline_spec", spec) if isinstance(spec, dict) else spec
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        yaml.safe_dump(spec, fh)
        fh.flush()
        typed = parse_params(params, fh.name, extra)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=name, cron_expression=cron, params=typed,
        pipeline_id=pipeline_id, version_id=found.pipeline_version_id, max_concurrency=max_concurrency,
        no_catchup=not catchup, start_time=start_time, end_time=end_time, pipeline_root=pipeline_root,
        service_account=service_account)
    return {"recurring_run_id": job.recurring_run_id, "experiment_id": exp.experiment_id, "cron": cron,
            "host": host, "pipeline_id": pipeline_id, "version_id": found.pipeline_version_id,
            "version": version, "parameters": sorted(typed)}


def register_platform_commands(app: typer.Typer) -> None:
    def _fail(message: str) -> None:
        from .cli import fail

        fail(message)

    @app.command("compile")
    def compile_cmd(
        out: Optional[str] = typer.Option(None, "--out", help=f"output folder (default: {COMPILED_DIR})"),
        check: bool = typer.Option(False, "--check", help="exit 1 when the committed YAML is out of date"),
    ) -> None:
        """Compile every pipeline in pipelines/ to YAML (the committed packages the KFP UI takes).

        First the images' content tags (pipelines/images.py): the YAML names the image its code needs."""
        from pipelines import images

        target = out or str(_repo_root() / COMPILED_DIR)
        if check:
            problems = images.stale_tags() + stale_compiled(target)
            if problems:
                typer.secho("compiled pipelines are out of date (run `sidreasoner compile`): " + ", ".join(problems),
                            fg=typer.colors.RED, err=True)
                raise typer.Exit(1)
            typer.echo(f"compiled pipelines in {target} are up to date")
            return
        if images.write_tags():
            _reimport_components()  # the components took their base_image from the old tags
            typer.echo(f"image tags: {images.computed_tags()}")
        for path in compile_pipelines(target):
            typer.echo(str(path))

    token_opt = typer.Option(None, "--token", envvar="KFP_TOKEN",
                             help="bearer token for the KFP API (e.g. `kubectl create token <sa>`, an OIDC token)")
    sa_token_opt = typer.Option(None, "--sa-token", envvar="KF_PIPELINES_SA_TOKEN_PATH",
                                help="service-account token file, re-read on each request (in-cluster)")

    def _talk(call):
        """Run a KFP API call; a refusal or bad argument ends the command with its reason."""
        from kfp_server_api.exceptions import ApiException

        try:
            return call()
        except ValueError as exc:
            _fail(str(exc))
        except ApiException as exc:
            hint = " (pass --token or --sa-token)" if exc.status in (401, 403) else ""
            _fail(f"the KFP API refused the request: {exc.status} {exc.reason}{hint}: {(exc.body or '')[:300]}")

    @app.command("submit")
    def submit_cmd(
        host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint, e.g. http://localhost:8080"),
        pipeline: str = typer.Option("sidreasoner", "--pipeline", help="compiled pipeline name"),
        package: Optional[str] = typer.Option(None, "--package", help="a compiled YAML (default: pipelines/compiled/<pipeline>.yaml)"),
        param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="pipeline parameter NAME=VALUE (repeatable)"),
        config: Optional[str] = typer.Option(None, "--config", help="preset name or YAML to pass as config_json"),
        category: Optional[str] = typer.Option(None, "--category", help="shortcut for --param category=..."),
        experiment: str = typer.Option("sidreasoner", "--experiment"),
        run_name: Optional[str] = typer.Option(None, "--run-name"),
        namespace: Optional[str] = typer.Option(None, "--namespace", help="KFP profile namespace (multi-user)"),
        pipeline_root: Optional[str] = typer.Option(None, "--pipeline-root", help="override, e.g. s3://bucket/root"),
        service_account: Optional[str] = typer.Option(None, "--service-account"),
        cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="override compile-time caching"),
        token: Optional[str] = token_opt,
        sa_token: Optional[str] = sa_token_opt,
    ) -> None:
        """Submit one run of the compiled pipeline to a KFP host."""
        try:
            pkg = _resolve_package(package, pipeline)
            params = _run_params(pkg, param, config, category)
        except ValueError as exc:
            _fail(str(exc))
        typer.echo(json.dumps(_talk(lambda: submit_run(
            host, pkg, params, experiment=experiment, run_name=run_name, namespace=namespace,
            pipeline_root=pipeline_root, service_account=service_account, enable_caching=cache,
            existing_token=token, sa_token_path=sa_token))))

    @app.command("publish")
    def publish_cmd(
        host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint"),
        pipeline: str = typer.Option("sidreasoner", "--pipeline", help="compiled pipeline name (the KFP pipeline's name)"),
        package: Optional[str] = typer.Option(None, "--package", help="a compiled YAML (default: pipelines/compiled/<pipeline>.yaml)"),
        version_name: Optional[str] = typer.Option(None, "--version-name", help="default: the git SHA of the checkout"),
        namespace: Optional[str] = typer.Option(None, "--namespace", help="KFP profile namespace (multi-user)"),
        token: Optional[str] = token_opt,
        sa_token: Optional[str] = sa_token_opt,
    ) -> None:
        """Upload the compiled pipeline as a version named by the git commit (Pipelines page of the UI);
        `schedule` runs a published version."""
        try:
            pkg = _resolve_package(package, pipeline)
            version, sha = (version_name, "") if version_name else git_version()
        except ValueError as exc:
            _fail(str(exc))
        description = f"git {sha}" if sha else ""
        typer.echo(json.dumps(_talk(lambda: publish_pipeline(
            kfp_client(host, token, sa_token, namespace), pkg, pipeline, version, description, namespace))))

    @app.command("schedule")
    def schedule_cmd(
        host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint"),
        cron: str = typer.Option(..., "--cron", help="6 fields, seconds first: '0 0 3 * * 1' = Mondays 03:00"),
        name: str = typer.Option(..., "--name", help="recurring run name"),
        pipeline: str = typer.Option("sidreasoner", "--pipeline", help="the published pipeline's name"),
        version: Optional[str] = typer.Option(None, "--version", help="published version (default: the git SHA of the checkout)"),
        param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="pipeline parameter NAME=VALUE"),
        config: Optional[str] = typer.Option(None, "--config", help="preset name or YAML to pass as config_json"),
        category: Optional[str] = typer.Option(None, "--category", help="the category to retrain on"),
        experiment: str = typer.Option("sidreasoner", "--experiment"),
        namespace: Optional[str] = typer.Option(None, "--namespace"),
        max_concurrency: int = typer.Option(1, "--max-concurrency"),
        catchup: bool = typer.Option(False, "--catchup/--no-catchup", help="backfill missed intervals"),
        start_time: Optional[str] = typer.Option(None, "--start-time", help="RFC 3339, e.g. 2026-12-01T00:00:00Z"),
        end_time: Optional[str] = typer.Option(None, "--end-time"),
        pipeline_root: Optional[str] = typer.Option(None, "--pipeline-root"),
        service_account: Optional[str] = typer.Option(None, "--service-account"),
        token: Optional[str] = token_opt,
        sa_token: Optional[str] = sa_token_opt,
    ) -> None:
        """Create a recurring run of a published pipeline version that retrains on a cron schedule."""
        try:
            cron_ok = validate_cron(cron)
            if max_concurrency < 1:
                raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
            version = version or git_version()[0]
            extra = _extra_params(config, category)
        except ValueError as exc:
            _fail(str(exc))
        typer.echo(json.dumps(_talk(lambda: schedule_run(
            host, pipeline, version, list(param or []), cron_ok, name, experiment=experiment, namespace=namespace,
            max_concurrency=max_concurrency, catchup=catchup, start_time=start_time, end_time=end_time,
            pipeline_root=pipeline_root, service_account=service_account, existing_token=token,
            sa_token_path=sa_token, extra=extra))))
