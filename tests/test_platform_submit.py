"""`sidreasoner submit` / `publish` / `schedule`: argument validation, credentials, and the REST calls
the real kfp.Client makes over HTTP. There is no KFP API server on this machine: the server here is
a small fake of the KFP v2beta1 REST endpoints those calls use (`/apis/v2beta1/...`), which checks
the bearer token, stores uploaded pipeline versions and records every request."""
import email.parser
import email.policy
import json
import subprocess
import threading
import uuid
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kfp import compiler, dsl
from typer.testing import CliRunner

from conftest import REPO
from pipelines import placement
from sidreasoner_core import pipeline_cli
from sidreasoner_core.cli import app
from sidreasoner_core.config import load_mapping
from sidreasoner_core.pipeline_cli import kfp_client, parse_params, validate_cron

PACKAGE = REPO / "pipelines" / "compiled" / "sidreasoner.yaml"


def _display_name_filter(query) -> str | None:
    for flt in query.get("filter", []):
        for pred in json.loads(flt).get("predicates", []):
            if pred.get("key") == "display_name":
                return pred.get("string_value") or pred.get("stringValue")
    return None


class KfpApi(BaseHTTPRequestHandler):
    """A fake of the KFP v2beta1 REST API: healthz, experiments, runs, recurring runs, pipelines and
    their versions (upload as multipart, as the real server takes it). With `server.token` set, every
    call but healthz needs `Authorization: Bearer <token>` (401 otherwise, as an auth proxy answers)."""

    def log_message(self, *args):
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body=None):
        url = urlparse(self.path)
        self.server.calls.append({"method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body,
                                  "authorization": self.headers.get("Authorization")})
        return url

    def _refused(self, url) -> bool:
        token = self.server.token
        if token is None or url.path == "/apis/v2beta1/healthz":
            return False
        if self.headers.get("Authorization") == f"Bearer {token}":
            return False
        self._reply(401, {"error": "Unauthorized", "code": 16, "message": "no valid bearer token"})
        return True

    def do_GET(self):
        url = self._record()
        if self._refused(url):
            return
        query = parse_qs(url.query)
        parts = url.path.split("/")
        if url.path == "/apis/v2beta1/healthz":
            return self._reply(200, {"multi_user": self.server.multi_user})
        if url.path == "/apis/v2beta1/experiments":
            wanted = _display_name_filter(query)
            found = [e for e in self.server.experiments if wanted in (None, e["display_name"])]
            return self._reply(200, {"experiments": found, "total_size": len(found)})
        if url.path == "/apis/v2beta1/pipelines":
            wanted = _display_name_filter(query)
            found = [p for p in self.server.pipelines.values() if wanted in (None, p["display_name"])]
            return self._reply(200, {"pipelines": found, "total_size": len(found)})
        if url.path.startswith("/apis/v2beta1/pipelines/") and parts[-1] == "versions":
            wanted = _display_name_filter(query)
            found = [{k: v for k, v in ver.items() if k != "pipeline_spec"} for ver in self.server.versions.values()
                     if ver["pipeline_id"] == parts[-2] and wanted in (None, ver["display_name"])]
            return self._reply(200, {"pipeline_versions": found, "total_size": len(found)})
        if url.path.startswith("/apis/v2beta1/pipelines/") and parts[-2] == "versions":
            return self._reply(200, self.server.versions[parts[-1]])
        return self._reply(404, {"error": f"no route {url.path}"})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            body = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                    for part in msg.iter_parts()}
        else:
            body = json.loads(raw or b"{}")
        url = self._record(body)
        if self._refused(url):
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/apis/v2beta1/experiments":
            exp = {"experiment_id": f"exp-{len(self.server.experiments) + 1}", "display_name": body["display_name"],
                   "namespace": body.get("namespace")}
            self.server.experiments.append(exp)
            return self._reply(200, exp)
        if url.path == "/apis/v2beta1/runs":
            return self._reply(200, {**body, "run_id": f"run-{uuid.uuid4().hex[:8]}", "state": "PENDING"})
        if url.path == "/apis/v2beta1/recurringruns":
            return self._reply(200, {**body, "recurring_run_id": f"rr-{uuid.uuid4().hex[:8]}", "status": "ENABLED"})
        if url.path == "/apis/v2beta1/pipelines":
            pipe = {"pipeline_id": f"p-{uuid.uuid4().hex[:8]}", "display_name": body["display_name"],
                    "namespace": body.get("namespace"), "description": body.get("description")}
            self.server.pipelines[pipe["pipeline_id"]] = pipe
            return self._reply(200, pipe)
        if url.path == "/apis/v2beta1/pipelines/upload_version":
            if query.get("pipelineid") not in self.server.pipelines:
                return self._reply(404, {"error": f"no pipeline {query.get('pipelineid')}"})
            docs = [d for d in yaml.safe_load_all(body["uploadfile"]) if d]
            spec = docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}
            ver = {"pipeline_version_id": f"v-{uuid.uuid4().hex[:8]}", "pipeline_id": query["pipelineid"],
                   "display_name": query["name"], "description": query.get("description"), "pipeline_spec": spec}
            self.server.versions[ver["pipeline_version_id"]] = ver
            self.server.uploads.append(body["uploadfile"])
            return self._reply(200, ver)
        return self._reply(404, {"error": f"no route {url.path}"})


@pytest.fixture
def kfp_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpApi)
    server.calls, server.experiments = [], [{"experiment_id": "exp-existing", "display_name": "existing"}]
    server.pipelines, server.versions, server.uploads = {}, {}, []
    server.token, server.multi_user = None, False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def posts(server, path):
    return [c["body"] for c in server.calls if c["method"] == "POST" and c["path"] == path]


def invoke(*args):
    return CliRunner().invoke(app, list(args))


# ---------------------------------------------------------------- submit

def test_submit_sends_the_compiled_spec_and_parameters(kfp_api):
    res = invoke("submit", "--host", kfp_api.url, "--param", "data_uri=s3://sidreasoner/raw/Industrial",
                 "--category", "Industrial_and_Scientific", "--config", "default", "--experiment", "nightly",
                 "--run-name", "try-1", "--service-account", "sidreasoner-pipeline-runner",
                 "--pipeline-root", "s3://sidreasoner/pipeline-root")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["run_id"].startswith("run-")
    [exp] = posts(kfp_api, "/apis/v2beta1/experiments")
    assert exp["display_name"] == "nightly"
    [run] = posts(kfp_api, "/apis/v2beta1/runs")
    assert run["display_name"] == "try-1" and run["experiment_id"] == "exp-2"
    assert run["service_account"] == "sidreasoner-pipeline-runner"
    docs = list(yaml.safe_load_all(PACKAGE.read_text()))
    sent = run["pipeline_spec"]
    if len(docs) > 1:  # with a platform spec, kfp.Client sends {"pipeline_spec", "platform_spec"}
        assert sent["platform_spec"] == docs[1]
        sent = sent["pipeline_spec"]
    assert sent == docs[0]
    rc = run["runtime_config"]
    assert rc["pipeline_root"] == "s3://sidreasoner/pipeline-root"
    assert rc["parameters"] == {"data_uri": "s3://sidreasoner/raw/Industrial", "category": "Industrial_and_Scientific",
                                "preset": "default"}  # a preset by name: config_json stays "{}" (no override)


def test_submit_a_config_file_over_no_preset(kfp_api, tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("sids:\n  epochs: 3\n")
    res = invoke("submit", "--host", kfp_api.url, "-p", "data_uri=/d", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    params = posts(kfp_api, "/apis/v2beta1/runs")[0]["runtime_config"]["parameters"]
    assert params["preset"] == "none" and json.loads(params["config_json"]) == load_mapping(str(cfg))


def test_submit_reuses_an_existing_experiment(kfp_api):
    res = invoke("submit", "--host", kfp_api.url, "-p", "data_uri=/data", "--experiment", "existing")
    assert res.exit_code == 0, res.output
    assert posts(kfp_api, "/apis/v2beta1/experiments") == []
    assert posts(kfp_api, "/apis/v2beta1/runs")[0]["experiment_id"] == "exp-existing"


@pytest.mark.parametrize("args, message", [
    (["-p", "data_uri=/d", "-p", "epochs=3"], "unknown pipeline parameter(s) ['epochs']"),
    (["-p", "data_uri"], "is not key=value"),
    (["--category", "Industrial"], "missing required pipeline parameter(s) ['data_uri']"),
    (["-p", "data_uri=/d", "--package", "/nonexistent/p.yaml"], "does not exist"),
    (["-p", "data_uri=/d", "--config", "no-such-preset"], "preset not found"),
])
def test_submit_rejects_bad_arguments_before_calling_the_server(kfp_api, args, message):
    res = invoke("submit", "--host", kfp_api.url, *args)
    assert res.exit_code != 0
    assert message in res.output
    assert kfp_api.calls == []


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def typed_op(epochs: int, lr: float, flag: bool, tags: list, knobs: dict, name: str) -> str:
    return name


@dsl.pipeline(name="typed")
def typed_pipeline(epochs: int, lr: float = 0.1, flag: bool = False, tags: list = [], knobs: dict = {},  # noqa: B006
                   name: str = "x"):
    task = typed_op(epochs=epochs, lr=lr, flag=flag, tags=tags, knobs=knobs, name=name)
    placement.gpu_training(task, count=2)


@pytest.fixture(scope="module")
def typed_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("typed") / "typed.yaml"
    compiler.Compiler().compile(typed_pipeline, str(path))
    return path


def test_parameters_are_typed_by_the_package(kfp_api, typed_package):
    res = invoke("submit", "--host", kfp_api.url, "--package", str(typed_package), "-p", "epochs=3", "-p", "lr=1",
                 "-p", "flag=true", "-p", 'tags=["a","b"]', "-p", 'knobs={"beam": 20}', "-p", "name=42")
    assert res.exit_code == 0, res.output
    run = posts(kfp_api, "/apis/v2beta1/runs")[0]
    # GPU placement travels with the run request (platform spec beside the pipeline spec).
    executors = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-typed-op"]["nodeSelector"]["labels"] == placement.DEFAULT_GPU_NODE_SELECTOR
    resources = run["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]["exec-typed-op"]["container"]
    assert resources["resources"]["accelerator"]["resourceCount"] == "2"
    params = run["runtime_config"]["parameters"]
    assert params == {"epochs": 3, "lr": 1.0, "flag": True, "tags": ["a", "b"], "knobs": {"beam": 20}, "name": "42"}


@pytest.mark.parametrize("pair, message", [
    ("epochs=two", "not valid JSON for type NUMBER_INTEGER"),
    ("epochs=2.5", "is not a NUMBER_INTEGER"),
    ("flag=1", "is not a BOOLEAN"),
    ("tags={}", "is not a LIST"),
])
def test_parse_params_rejects_wrong_types(typed_package, pair, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_params(["epochs=1", pair] if not pair.startswith("epochs") else [pair], typed_package)


# ---------------------------------------------------------------- schedule

@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout with one commit, taken as the repository `publish` names versions after."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "README.md").write_text("x\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    monkeypatch.setattr(pipeline_cli, "_repo_root", lambda: repo)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return SimpleNamespace(path=repo, sha=sha)


def publish(kfp_api, *extra):
    res = invoke("publish", "--host", kfp_api.url, "--package", str(PACKAGE), *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_publish_uploads_a_version_named_by_the_git_sha(kfp_api, checkout):
    kfp_api.token = "t0ken"
    out = publish(kfp_api, "--token", "t0ken")
    assert out["version"] == checkout.sha[:12] and out["pipeline_created"] is True
    [created] = posts(kfp_api, "/apis/v2beta1/pipelines")
    assert created["display_name"] == "sidreasoner"
    [upload] = [c for c in kfp_api.calls if c["path"] == "/apis/v2beta1/pipelines/upload_version"]
    assert upload["query"]["name"] == [checkout.sha[:12]] and upload["query"]["pipelineid"] == [out["pipeline_id"]]
    assert upload["query"]["description"] == [f"git {checkout.sha}"]
    assert kfp_api.uploads == [PACKAGE.read_bytes()]  # the compiled package, byte for byte
    assert {c["authorization"] for c in kfp_api.calls if c["path"] != "/apis/v2beta1/healthz"} == {"Bearer t0ken"}
    # The same commit again: the version is there, nothing is uploaded twice.
    again = publish(kfp_api, "--token", "t0ken")
    assert again["version_id"] == out["version_id"] and again["pipeline_created"] is False
    assert len(kfp_api.uploads) == 1
    # A new commit: a new version of the same pipeline.
    other = publish(kfp_api, "--token", "t0ken", "--version-name", "hotfix-1")
    assert other["pipeline_id"] == out["pipeline_id"] and other["version_id"] != out["version_id"]


def test_publish_refuses_uncommitted_changes(kfp_api, checkout):
    (checkout.path / "README.md").write_text("changed\n")
    res = invoke("publish", "--host", kfp_api.url, "--package", str(PACKAGE))
    assert res.exit_code != 0 and "uncommitted changes (README.md)" in res.output
    assert kfp_api.calls == []


def test_schedule_runs_the_published_version(kfp_api, checkout):
    published = publish(kfp_api)
    res = invoke("schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * MON", "--name", "retrain-industrial",
                 "--category", "Industrial_and_Scientific", "-p", "data_uri=s3://sidreasoner/raw/Industrial",
                 "--experiment", "retrain", "--start-time", "2026-12-01T00:00:00Z")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["recurring_run_id"].startswith("rr-") and out["cron"] == "0 0 3 * * MON"
    assert out["version"] == checkout.sha[:12] and out["version_id"] == published["version_id"]
    [job] = posts(kfp_api, "/apis/v2beta1/recurringruns")
    assert job["display_name"] == "retrain-industrial"
    assert job["experiment_id"] == out["experiment_id"] == "exp-2"
    # A reference to the version, not a copy of the spec frozen into the schedule.
    assert job["pipeline_version_reference"] == {"pipeline_id": published["pipeline_id"],
                                                 "pipeline_version_id": published["version_id"]}
    assert not job.get("pipeline_spec")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * MON"
    assert job["trigger"]["cron_schedule"]["start_time"].startswith("2026-12-01T00:00:00")
    assert job["mode"] == "ENABLE" and job["no_catchup"] is True and int(job["max_concurrency"]) == 1
    assert job["runtime_config"]["parameters"] == {"data_uri": "s3://sidreasoner/raw/Industrial",
                                                   "category": "Industrial_and_Scientific"}


def test_schedule_checks_parameters_against_the_version(kfp_api, checkout, typed_package):
    publish_typed = invoke("publish", "--host", kfp_api.url, "--package", str(typed_package), "--pipeline", "typed")
    assert publish_typed.exit_code == 0, publish_typed.output
    base = ["schedule", "--host", kfp_api.url, "--cron", "@daily", "--name", "n", "--pipeline", "typed"]
    bad = invoke(*base, "-p", "epochs=two")
    assert bad.exit_code != 0 and "not valid JSON for type NUMBER_INTEGER" in bad.output
    missing = invoke(*base[:-2], "-p", "data_uri=/d", "--version", "no-such-version")
    assert missing.exit_code != 0 and "has no version 'no-such-version'" in missing.output
    assert posts(kfp_api, "/apis/v2beta1/recurringruns") == []
    ok = invoke(*base, "-p", "epochs=3")
    assert ok.exit_code == 0, ok.output
    assert posts(kfp_api, "/apis/v2beta1/recurringruns")[0]["runtime_config"]["parameters"] == {"epochs": 3}


# ---------------------------------------------------------------- credentials

def test_submit_sends_the_token_and_is_refused_without_it(kfp_api, monkeypatch):
    kfp_api.token = "s3cret"
    args = ["submit", "--host", kfp_api.url, "-p", "data_uri=/d", "--experiment", "existing"]
    refused = invoke(*args)
    assert refused.exit_code != 0
    assert "the KFP API refused the request: 401" in refused.output and "pass --token or --sa-token" in refused.output
    assert posts(kfp_api, "/apis/v2beta1/runs") == []
    monkeypatch.setenv("KFP_TOKEN", "s3cret")  # the environment works as --token does
    ok = invoke(*args)
    assert ok.exit_code == 0, ok.output
    [run] = [c for c in kfp_api.calls if c["path"] == "/apis/v2beta1/runs" and c["method"] == "POST"]
    assert run["authorization"] == "Bearer s3cret"


def test_service_account_token_file_is_read_on_each_request(kfp_api, tmp_path):
    """kfp's ServiceAccountTokenVolumeCredentials: a rotated token (the kubelet renews projected
    tokens) is picked up by the next request of the same client."""
    token_file = tmp_path / "token"
    token_file.write_text("first")
    client = kfp_client(kfp_api.url, sa_token_path=str(token_file))
    client.list_experiments()
    token_file.write_text("rotated")
    client.list_experiments()
    seen = [c["authorization"] for c in kfp_api.calls if c["path"] == "/apis/v2beta1/experiments"]
    assert seen == ["Bearer first", "Bearer rotated"]
    with pytest.raises(ValueError, match="not both"):
        kfp_client(kfp_api.url, token="x", sa_token_path=str(token_file))
    with pytest.raises(ValueError, match="does not exist"):
        kfp_client(kfp_api.url, sa_token_path=str(tmp_path / "missing"))


def test_multi_user_server_needs_the_profile_namespace(kfp_api):
    kfp_api.multi_user = True
    res = invoke("submit", "--host", kfp_api.url, "-p", "data_uri=/d")
    assert res.exit_code != 0 and "multi-user KFP: pass --namespace" in res.output
    assert {c["path"] for c in kfp_api.calls} == {"/apis/v2beta1/healthz"}  # asked, nothing sent
    ok = invoke("submit", "--host", kfp_api.url, "-p", "data_uri=/d", "--namespace", "team-a", "--experiment", "x")
    assert ok.exit_code == 0, ok.output
    assert posts(kfp_api, "/apis/v2beta1/experiments")[0]["namespace"] == "team-a"


@pytest.mark.parametrize("cron, message", [
    ("0 3 * * 1", "has 5 fields; KFP needs 6"),
    ("0 0 3 * * 1 2026", "has 7 fields"),
    ("0 61 * * * *", "minute field '61' value 61 is out of range"),
    ("0 0 24 * * *", "hour field"),
    ("0 0 0 0 * *", "day-of-month field"),
    ("0 0 0 * 13 *", "month field"),
    ("0 0 0 * * 7", "day-of-week field"),
    ("0 0 0 * * FUNDAY", "not a number"),
    ("*/0 * * * * *", "step"),
    ("0 0 5-2 * * *", "runs backwards"),
    ("0 0 ? * * *", "hour field"),
    ("@fortnightly", "unknown cron descriptor"),
    ("", "has 0 fields"),
])
def test_schedule_rejects_bad_cron_without_calling_the_server(kfp_api, cron, message):
    res = invoke("schedule", "--host", kfp_api.url, "--cron", cron, "--name", "n", "-p", "data_uri=/d")
    assert res.exit_code == 2
    assert message in res.output
    assert kfp_api.calls == []


@pytest.mark.parametrize("cron", ["0 0 3 * * 1", "*/30 * * * * *", "0 0 3 ? * MON-FRI", "0 15,45 9-17/2 1 JAN,jul *",
                                  "@daily", "@every 6h30m", "  0  0 3 * * 1 "])
def test_valid_crons(cron):
    assert validate_cron(cron) == " ".join(cron.split())


def test_schedule_rejects_bad_concurrency(kfp_api):
    res = invoke("schedule", "--host", kfp_api.url, "--cron", "@daily", "--name", "n", "-p", "data_uri=/d",
                 "--max-concurrency", "0")
    assert res.exit_code != 0
    assert posts(kfp_api, "/apis/v2beta1/recurringruns") == []
