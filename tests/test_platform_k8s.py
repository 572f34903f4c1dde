"""`k8s/` manifests: the kustomization renders (here, offline) to objects that validate against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict), cross-references resolve (secrets,
config maps, services, buckets), the names in `pipelines/placement.py` exist, and no secret
template carries a value."""
from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import REPO
from pipelines import placement

K8S = REPO / "k8s"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest supported managed clusters .. newest schema shipped
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(kustomization_dir):
    """A small kustomize: the listed resources, with `namespace` and `labels` applied."""
    kust = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    objs = []
    for res in kust["resources"]:
        for obj in load_all(kustomization_dir / res):
            meta = obj.setdefault("metadata", {})
            if kust.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = kust["namespace"]
            for label_set in kust.get("labels", []):
                meta.setdefault("labels", {}).update(label_set["pairs"])
            objs.append(obj)
    return kust, objs


@pytest.fixture(scope="module")
def rendered():
    return render(K8S)


@pytest.fixture(scope="module")
def by_kind(rendered):
    out = {}
    for obj in rendered[1]:
        out.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    return out


@pytest.fixture(scope="module")
def secret_templates():
    out = {}
    for path in sorted((K8S / "secrets").glob("*.template.yaml")):
        for obj in load_all(path):
            out[obj["metadata"]["name"]] = (path, obj)
    return out


def test_kustomization_lists_existing_files(rendered):
    kust, objs = rendered
    assert kust["kind"] == "Kustomization"
    assert {o["kind"] for o in objs} >= {"Namespace", "ConfigMap", "Deployment", "Service",
                                         "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"}
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifests_validate_against_schemas(rendered, secret_templates, version):
    docs = rendered[1] + [obj for _, obj in secret_templates.values()]
    for obj in docs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for k8s {version}: {exc.message}")


def test_validation_catches_a_bad_manifest():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c", "imag": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_agrees(rendered):
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    key = lambda o: (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))  # noqa: E731
    assert sorted(map(key, theirs)) == sorted(map(key, rendered[1]))
    for obj in theirs:
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


def test_secret_templates_hold_no_values(secret_templates):
    assert set(secret_templates) >= {placement.TEACHER_SECRET, placement.OBJECT_STORE_SECRET}
    for name, (path, obj) in secret_templates.items():
        assert obj["kind"] == "Secret"
        assert "data" not in obj, f"{path.name}: base64 data in a template"
        assert all(v in ("", None) for v in obj.get("stringData", {}).values()), f"{path.name} carries a value"
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert not any("secret" in r for r in kust["resources"]), "templates must not be applied by kustomize"


def test_placement_names_exist_in_manifests(by_kind, secret_templates):
    teacher_keys = secret_templates[placement.TEACHER_SECRET][1]["stringData"]
    assert set(placement.TEACHER_SECRET_KEYS) <= set(teacher_keys)
    store_keys = secret_templates[placement.OBJECT_STORE_SECRET][1]["stringData"]
    assert set(placement.OBJECT_STORE_SECRET_KEYS) <= set(store_keys)
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
    assert sa["namespace"] == by_kind["Namespace"]["sidreasoner"]["metadata"]["name"]


def test_gpu_pool_notes_match_placement_defaults():
    notes = (K8S / "gpu-node-pool.md").read_text()
    for key, value in placement.DEFAULT_GPU_NODE_SELECTOR.items():
        assert f'{key}: "{value}"' in notes
    for tol in placement.DEFAULT_GPU_TOLERATIONS:
        assert f"{tol['key']}:{tol['effect']}" in notes
