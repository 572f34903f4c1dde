"""`k8s/serving/`: the KServe InferenceService of the served model, checked offline. KServe's CRD
schema is not shipped here, so the predictor's pod part (everything but KServe's own component
fields) is validated strictly as a Kubernetes PodSpec, and its references must resolve against
the platform manifests of `k8s/overlays/`."""
from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from components import images
from test_platform_k8s import K8S, K8S_VERSIONS, render

# Fields KServe's PredictorSpec adds beside the inlined PodSpec (serving.kserve.io/v1beta1 ComponentExtensionSpec
# and PredictorExtensionSpec); anything else under `predictor` must be a PodSpec field.
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
                           "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
                           "deploymentStrategy", "autoScaling", "workerSpec", "model"}


@pytest.fixture(scope="module")
def serving():
    kust, objs = render(K8S / "serving")
    (isvc,) = [o for o in objs if o["kind"] == "InferenceService"]
    return kust, isvc


@pytest.fixture(scope="module")
def platform():
    return {(o["kind"], o["metadata"]["name"]): o for o in render(K8S / "overlays" / "standalone")[1]}


def _pod(isvc) -> dict:
    spec = copy.deepcopy(isvc["spec"]["predictor"])
    for key in KSERVE_COMPONENT_FIELDS:
        spec.pop(key, None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]}, "spec": spec}


def test_inference_service_shape(serving):
    kust, isvc = serving
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    # No namespace of its own: applied with `kubectl -n <the platform's namespace>` (k8s/README.md).
    assert "namespace" not in kust and "namespace" not in isvc["metadata"]
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe routes traffic to


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_predictor_pod_validates(serving, version):
    kubernetes_validate.validate(_pod(serving[1]), version, strict=True)


def test_a_broken_predictor_fails_validation(serving):
    pod = _pod(serving[1])
    pod["spec"]["containers"][0]["imag"] = pod["spec"]["containers"][0].pop("image")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)


def test_serves_the_champion_offline_on_the_pipeline_image(serving):
    (container,) = serving[1]["spec"]["predictor"]["containers"]
    assert container["image"] == images.CPU_IMAGE  # holds mlflow and sidreasoner_core
    cmd = container["command"] + container["args"]
    assert cmd[:3] == ["mlflow", "models", "serve"]
    opt = dict(zip(cmd[3::2], cmd[4::2]))
    assert opt["--model-uri"] == "models:/sidreasoner@champion"
    assert opt["--env-manager"] == "local"  # no conda/virtualenv built at start-up
    port = int(opt["--port"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in ports.values()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/ping" and ports.get(get["port"], get["port"]) == port


def test_references_resolve_against_the_platform(serving, platform):
    secrets = {}
    for path in (K8S / "secrets").glob("*.template.yaml"):
        obj = yaml.safe_load(path.read_text())
        secrets[obj["metadata"]["name"]] = obj["stringData"]
    spec = serving[1]["spec"]["predictor"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL",
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env)  # MLflow asks for a user
    for e in env.values():
        src = e.get("valueFrom", {})
        if "secretKeyRef" in src:
            assert src["secretKeyRef"]["key"] in secrets[src["secretKeyRef"]["name"]], e
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            assert ref["key"] in platform[("ConfigMap", ref["name"])]["data"], e
        assert "value" not in e or "KEY" not in e["name"], f"{e['name']}: a credential as a literal"
    assert {m["name"] for m in container.get("volumeMounts", [])} <= {v["name"] for v in spec.get("volumes", [])}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]
