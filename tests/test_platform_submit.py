"""`sidreasoner submit` / `schedule`: argument validation, and the REST calls kfp.Client makes,
recorded by a small KFP-API HTTP server on loopback (`/apis/v2beta1/...`)."""
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kfp import compiler, dsl
from typer.testing import CliRunner

from conftest import REPO
from pipelines import placement
from sidreasoner_core.cli import app
from sidreasoner_core.config import load_mapping
from sidreasoner_core.pipeline_cli import parse_params, validate_cron

PACKAGE = REPO / "pipelines" / "compiled" / "sidreasoner.yaml"


class KfpApi(BaseHTTPRequestHandler):
    """The parts of the KFP v2beta1 REST API that kfp.Client uses to create runs and recurring runs."""

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
        self.server.calls.append({"method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body})
        return url

    def do_GET(self):
        url = self._record()
        if url.path == "/apis/v2beta1/healthz":
            return self._reply(200, {"multi_user": False})
        if url.path == "/apis/v2beta1/experiments":
            wanted = None
            for flt in parse_qs(url.query).get("filter", []):
                for pred in json.loads(flt).get("predicates", []):
                    if pred.get("key") == "display_name":
                        wanted = pred.get("string_value") or pred.get("stringValue")
            found = [e for e in self.server.experiments if wanted in (None, e["display_name"])]
            return self._reply(200, {"experiments": found, "total_size": len(found)})
        return self._reply(404, {"error": f"no route {url.path}"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        url = self._record(body)
        if url.path == "/apis/v2beta1/experiments":
            exp = {"experiment_id": f"exp-{len(self.server.experiments) + 1}", "display_name": body["display_name"]}
            self.server.experiments.append(exp)
            return self._reply(200, exp)
        if url.path == "/apis/v2beta1/runs":
            return self._reply(200, {**body, "run_id": f"run-{uuid.uuid4().hex[:8]}", "state": "PENDING"})
        if url.path == "/apis/v2beta1/recurringruns":
            return self._reply(200, {**body, "recurring_run_id": f"rr-{uuid.uuid4().hex[:8]}", "status": "ENABLED"})
        return self._reply(404, {"error": f"no route {url.path}"})


@pytest.fixture
def kfp_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpApi)
    server.calls, server.experiments = [], [{"experiment_id": "exp-existing", "display_name": "existing"}]
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

def test_schedule_creates_a_cron_recurring_run(kfp_api):
    res = invoke("schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * MON", "--name", "retrain-industrial",
                 "--category", "Industrial_and_Scientific", "-p", "data_uri=s3://sidreasoner/raw/Industrial",
                 "--experiment", "retrain", "--start-time", "2026-12-01T00:00:00Z")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["recurring_run_id"].startswith("rr-") and out["cron"] == "0 0 3 * * MON"
    [job] = posts(kfp_api, "/apis/v2beta1/recurringruns")
    assert job["display_name"] == "retrain-industrial"
    assert job["experiment_id"] == out["experiment_id"] == "exp-2"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * MON"
    assert job["trigger"]["cron_schedule"]["start_time"].startswith("2026-12-01T00:00:00")
    assert job["mode"] == "ENABLE" and job["no_catchup"] is True and int(job["max_concurrency"]) == 1
    assert job["runtime_config"]["parameters"] == {"data_uri": "s3://sidreasoner/raw/Industrial",
                                                   "category": "Industrial_and_Scientific"}
    spec = job["pipeline_spec"]
    assert spec.get("pipeline_spec", spec)["pipelineInfo"]["name"] == "sidreasoner"


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
