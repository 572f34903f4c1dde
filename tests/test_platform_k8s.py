"""`k8s/` manifests: each overlay (standalone KFP in `kubeflow`, multi-user KFP in a Profile's
namespace) renders with kustomize (here, offline) to objects that validate against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict); cross-references resolve (secrets, config maps,
services, buckets); addresses follow the namespace; setup Jobs run without an Istio sidecar; the
NetworkPolicies admit only the pipeline's pods (and the UIs) to MLflow, MinIO and PostgreSQL; the
names in `pipelines/placement.py` exist; no secret template carries a value."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import REPO
from pipelines import images, placement

K8S = REPO / "k8s"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest supported managed clusters .. newest schema shipped
OVERLAYS = {"standalone": "kubeflow", "multi-user": "sidreasoner"}  # overlay -> namespace runs execute in
# Kinds of CRDs (Kubeflow, Istio) that kubernetes-validate has no schema for: checked by hand below.
CRD_KINDS = {"Profile", "PeerAuthentication"}


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render k8s/")
    return found


def render(kustomization_dir):
    """(kustomization, objects) as `kubectl kustomize` renders the directory."""
    out = subprocess.run([kubectl(), "kustomize", str(kustomization_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kust = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    return kust, [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request):
    kust, objs = render(K8S / "overlays" / request.param)
    return request.param, kust, objs


@pytest.fixture(scope="module")
def by_kind(rendered):
    out = {}
    for obj in rendered[2]:
        out.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    return out


@pytest.fixture(scope="module")
def secret_templates():
    out = {}
    for path in sorted((K8S / "secrets").glob("*.template.yaml")):
        for obj in load_all(path):
            out[obj["metadata"]["name"]] = (path, obj)
    return out


def test_overlays_put_everything_in_the_runs_namespace(rendered):
    overlay, kust, objs = rendered
    assert kust["namespace"] == OVERLAYS[overlay]
    assert {o["kind"] for o in objs} >= {"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim",
                                         "ServiceAccount", "Role", "RoleBinding", "Job", "NetworkPolicy"}
    assert all(o["metadata"]["namespace"] == OVERLAYS[overlay] for o in objs)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"
    assert not any(o["kind"] == "Namespace" for o in objs)  # kubeflow exists; a Profile makes its own


def test_multi_user_overlay_has_the_profile_of_its_namespace():
    (profile,) = load_all(K8S / "overlays" / "multi-user" / "profile.yaml")
    assert profile["apiVersion"] == "kubeflow.org/v1" and profile["kind"] == "Profile"
    assert profile["metadata"]["name"] == OVERLAYS["multi-user"]  # a Profile's namespace is its name
    assert "namespace" not in profile["metadata"]  # cluster-scoped
    assert profile["spec"]["owner"]["kind"] == "User" and "@" in profile["spec"]["owner"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifests_validate_against_schemas(rendered, secret_templates, version):
    docs = [o for o in rendered[2] if o["kind"] not in CRD_KINDS] + [obj for _, obj in secret_templates.values()]
    for obj in docs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for k8s {version}: {exc.message}")


def test_istio_peer_authentication_admits_the_sidecar_less_jobs(by_kind):
    for name, pa in by_kind.get("PeerAuthentication", {}).items():
        assert pa["apiVersion"] == "security.istio.io/v1"
        assert pa["spec"]["mtls"]["mode"] in ("PERMISSIVE", "STRICT", "DISABLE")
        (expr,) = pa["spec"]["selector"]["matchExpressions"]
        assert set(expr["values"]) <= set(by_kind["Service"]), name


def test_validation_catches_a_bad_manifest():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c", "imag": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_addresses_follow_the_namespace(rendered, by_kind):
    """No address names a namespace: short service names resolve in the pod's own namespace."""
    from urllib.parse import urlparse

    from pipelines import sidreasoner

    text = yaml.safe_dump_all(rendered[2])
    assert ".svc" not in text and "sidreasoner.svc" not in (REPO / "pipelines" / "sidreasoner.py").read_text()
    for compiled in (REPO / "pipelines" / "compiled").glob("*.yaml"):
        assert ".svc" not in compiled.read_text(), compiled.name
    config = by_kind["ConfigMap"]["sidreasoner-config"]["data"]
    urls = [config["s3-endpoint"], config["mlflow-s3-endpoint"], config["mlflow-tracking-uri"],
            sidreasoner.CLUSTER_TRACKING_URI,
            "http://" + yaml.safe_load(by_kind["ConfigMap"]["kfp-launcher"]["data"]["providers"])["s3"]["default"]["endpoint"]]
    for url in urls:
        host, port = urlparse(url).hostname, urlparse(url).port
        assert "." not in host, f"{url}: not a short service name"
        assert port in [p["port"] for p in by_kind["Service"][host]["spec"]["ports"]], url
    assert sidreasoner.CLUSTER_TRACKING_URI == config["mlflow-tracking-uri"]


def test_setup_jobs_run_without_an_istio_sidecar(by_kind):
    assert set(by_kind["Job"]) == {"minio-buckets", "mlflow-users"}
    for name, job in by_kind["Job"].items():
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations["sidecar.istio.io/inject"] == "false", name


def test_images_carry_their_content_tags(by_kind):
    tags = images.computed_tags()
    for where, template in _pod_specs(by_kind):
        for c in template["spec"]["containers"]:
            if c["image"].startswith(images.REGISTRY + "/"):
                name, tag = c["image"].rsplit("/", 1)[1].split(":")
                assert tag == tags[name], f"{where}: {c['image']} is not the content tag {tags[name]}"


def test_secret_templates_hold_no_values(secret_templates):
    assert set(secret_templates) >= {placement.TEACHER_SECRET, placement.OBJECT_STORE_SECRET, placement.MLFLOW_SECRET,
                                     "sidreasoner-mlflow-admin", "sidreasoner-postgres"}
    for name, (path, obj) in secret_templates.items():
        assert obj["kind"] == "Secret"
        assert "data" not in obj, f"{path.name}: base64 data in a template"
        assert all(v in ("", None) for v in obj.get("stringData", {}).values()), f"{path.name} carries a value"
    for kust_file in K8S.rglob("kustomization.yaml"):
        kust = yaml.safe_load(kust_file.read_text())
        assert not any("secret" in r for r in kust["resources"]), f"{kust_file}: templates must not be applied"


def test_placement_names_exist_in_manifests(by_kind, secret_templates):
    teacher_keys = secret_templates[placement.TEACHER_SECRET][1]["stringData"]
    assert set(placement.TEACHER_SECRET_KEYS) <= set(teacher_keys)
    store_keys = secret_templates[placement.OBJECT_STORE_SECRET][1]["stringData"]
    assert set(placement.OBJECT_STORE_SECRET_KEYS) <= set(store_keys)
    mlflow_keys = secret_templates[placement.MLFLOW_SECRET][1]["stringData"]
    assert set(placement.MLFLOW_SECRET_KEYS) <= set(mlflow_keys)
    config = by_kind["ConfigMap"][placement.PLATFORM_CONFIG_MAP]["data"]
    assert set(placement.PLATFORM_CONFIG_KEYS) <= set(config)


def test_kfp_launcher_makes_the_object_store_the_pipeline_root(by_kind, secret_templates):
    launcher = by_kind["ConfigMap"]["kfp-launcher"]["data"]
    root = launcher["defaultPipelineRoot"]
    assert root.startswith("s3://")
    bucket = root[len("s3://"):].split("/")[0]
    s3 = yaml.safe_load(launcher["providers"])["s3"]["default"]
    host, port = s3["endpoint"].split(":")
    assert host.split(".")[0] in by_kind["Service"] and int(port) in [
        p["port"] for p in by_kind["Service"][host.split(".")[0]]["spec"]["ports"]]
    ref = s3["credentials"]["secretRef"]
    assert s3["credentials"]["fromEnv"] is False
    keys = secret_templates[ref["secretName"]][1]["stringData"]
    assert ref["accessKeyKey"] in keys and ref["secretKeyKey"] in keys
    # The bucket job creates the pipeline-root bucket and MLflow's bucket.
    job_args = " ".join(by_kind["Job"]["minio-buckets"]["spec"]["template"]["spec"]["containers"][0]["args"])
    mlflow_args = " ".join(by_kind["Deployment"]["mlflow"]["spec"]["template"]["spec"]["containers"][0]["args"])
    mlflow_bucket = mlflow_args.split("--artifacts-destination=s3://")[1].split("/")[0]
    assert f"store/{bucket}" in job_args and f"store/{mlflow_bucket}" in job_args
    assert by_kind["ConfigMap"]["sidreasoner-config"]["data"]["pipeline-root"] == root


def _pod_specs(by_kind):
    for kind in ("Deployment", "Job", "StatefulSet"):
        for name, obj in by_kind.get(kind, {}).items():
            yield f"{kind}/{name}", obj["spec"]["template"]


def test_references_resolve(by_kind, secret_templates):
    for where, template in _pod_specs(by_kind):
        spec = template["spec"]
        for c in spec["containers"]:
            for env in c.get("env", []):
                src = env.get("valueFrom", {})
                if "secretKeyRef" in src:
                    ref = src["secretKeyRef"]
                    assert ref["name"] in secret_templates, f"{where}: unknown secret {ref['name']}"
                    assert ref["key"] in secret_templates[ref["name"]][1]["stringData"], f"{where}: {ref}"
                if "configMapKeyRef" in src:
                    ref = src["configMapKeyRef"]
                    assert ref["key"] in by_kind["ConfigMap"][ref["name"]]["data"], f"{where}: {ref}"
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"], where
            if "configMap" in vol:
                assert vol["configMap"]["name"] in by_kind["ConfigMap"], where
        mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in spec.get("volumes", [])}, where
    for name, svc in by_kind["Service"].items():
        pods = [t for w, t in _pod_specs(by_kind) if w.startswith("Deployment/")
                and svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(pods) == 1, f"Service/{name} selects {len(pods)} deployments"
        port_names = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"Service/{name}: no container port {port['targetPort']}"


def test_workloads_run_non_root_on_pinned_images(by_kind):
    for where, template in _pod_specs(by_kind):
        spec = template["spec"]
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, where
        assert spec["securityContext"].get("runAsUser", 0) > 0, where
        for c in spec["containers"]:
            image = c["image"]
            assert ":" in image.split("/")[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c.get("resources", {}).get("limits"), f"{where}: no resource limits"


def test_rbac_is_least_privilege(by_kind):
    role = by_kind["Role"]["sidreasoner-pipeline-runner"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) == {"get"}
            assert set(rule["resourceNames"]) == {placement.TEACHER_SECRET, placement.OBJECT_STORE_SECRET}
    binding = by_kind["RoleBinding"]["sidreasoner-pipeline-runner"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = binding["subjects"][0]
    assert sa["kind"] == "ServiceAccount" and sa["name"] in by_kind["ServiceAccount"]
    assert sa["namespace"] == binding["metadata"]["namespace"]  # the overlay's, not the base's placeholder


def test_gpu_pool_notes_match_placement_defaults():
    notes = (K8S / "gpu-node-pool.md").read_text()
    for key, value in placement.DEFAULT_GPU_NODE_SELECTOR.items():
        assert f'{key}: "{value}"' in notes
    for tol in placement.DEFAULT_GPU_TOLERATIONS:
        assert f"{tol['key']}:{tol['effect']}" in notes


# ---------------------------------------------------------------- NetworkPolicies, evaluated

def _selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def admitted(policies, target_labels: dict, namespace: str, source_labels: dict, source_namespace: str,
             port: int) -> bool:
    """Kubernetes' rule: a pod selected by any ingress policy takes only what one of their rules allows."""
    selecting = [p for p in policies if p["metadata"]["namespace"] == namespace
                 and _selects(p["spec"]["podSelector"], target_labels) and "Ingress" in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            for peer in rule.get("from", []):
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                ns_labels = {"kubernetes.io/metadata.name": source_namespace}
                same_ns = source_namespace == namespace
                if ns_sel is None and not same_ns:
                    continue
                if ns_sel is not None and not _selects(ns_sel, ns_labels):
                    continue
                if pod_sel is None or _selects(pod_sel, source_labels):
                    return True
    return False


def test_network_policies_fence_mlflow_the_object_store_and_postgres(rendered, by_kind):
    ns = rendered[1]["namespace"]
    policies = list(by_kind["NetworkPolicy"].values())
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in by_kind["Deployment"].items()}
    jobs = {name: j["spec"]["template"]["metadata"]["labels"] for name, j in by_kind["Job"].items()}
    pipeline_pod = {"pipelines.kubeflow.org/v2_component": "true", "workflows.argoproj.io/workflow": "sidreasoner-x"}
    serving_pod = {"serving.kserve.io/inferenceservice": "sidreasoner", "component": "predictor"}
    other_pod = {"app": "notebook", "pipelines.kubeflow.org/v2_component": "false"}
    kfp_ui = {"app": "ml-pipeline-ui"}
    ingress = {"app": "istio-ingressgateway"}
    servers = {"mlflow": 5000, "minio": 9000, "postgres": 5432}

    def can(source, src_ns, server):
        return admitted(policies, labels[server], ns, source, src_ns, servers[server])

    # Every server pod is selected by a policy: nothing unlisted gets in.
    for server in servers:
        assert not can(other_pod, ns, server), f"any pod of the namespace reaches {server}"
        assert not can(pipeline_pod, "someone-else", server), f"another namespace's pipeline pods reach {server}"
    assert can(pipeline_pod, ns, "mlflow") and can(pipeline_pod, ns, "minio")
    assert not can(pipeline_pod, ns, "postgres")  # only MLflow talks to its database
    assert can(labels["mlflow"], ns, "postgres") and can(labels["mlflow"], ns, "minio")
    assert can(serving_pod, ns, "mlflow") and can(serving_pod, ns, "minio") and not can(serving_pod, ns, "postgres")
    assert can(jobs["minio-buckets"], ns, "minio") and can(jobs["mlflow-users"], ns, "mlflow")
    assert can(ingress, "istio-system", "mlflow") and not can(ingress, "istio-system", "minio")
    assert can(kfp_ui, "kubeflow", "minio") and not can(kfp_ui, "kubeflow", "mlflow")
    assert not can(ingress, "istio-system", "postgres") and not can(kfp_ui, "kubeflow", "postgres")
    # Only the listed port.
    assert not admitted(policies, labels["minio"], ns, pipeline_pod, ns, 9001)


def test_network_policy_evaluation_refuses_when_it_should():
    """The evaluator above, on a policy it must read as a refusal (so the fence test can fail)."""
    policy = {"metadata": {"namespace": "a"}, "spec": {"podSelector": {"matchLabels": {"app": "db"}},
              "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                                       "ports": [{"port": 5432}]}]}}
    assert admitted([policy], {"app": "db"}, "a", {"app": "web"}, "a", 5432)
    assert not admitted([policy], {"app": "db"}, "a", {"app": "web"}, "b", 5432)
    assert not admitted([policy], {"app": "db"}, "a", {"app": "web"}, "a", 22)
    assert not admitted([policy], {"app": "db"}, "a", {"app": "cron"}, "a", 5432)
    assert admitted([policy], {"app": "cache"}, "a", {"app": "cron"}, "a", 6379)  # not selected: open
