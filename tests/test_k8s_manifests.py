"""Every manifest under k8s/: custom kinds against the real CRDs (closed objects), built-in kinds with
kubernetes-validate (strict), the kustomizations complete, and the pieces consistent with each other."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from asymvae.cluster.jobspec import TrainingJobSpec, gpu_tolerations, job_labels
from asymvae.cluster.pytorchjob import JOB_NAME_LABEL, REPLICA_TYPE_LABEL, build_pytorchjob
from asymvae.cluster.trainjob import POD_TEMPLATE_OVERRIDES, build_trainjob, in_form
from asymvae.serving.inferenceservice import InferenceServiceSpec, build_inferenceservice
from tests.support.crd import crd_identity, schema_errors
from tests.support.fake_kube import trainjob_webhook_errors
from tests.support.k8s_rbac import WITH_TRAINING_OPERATOR, allows, kubeflow_role_rules
from tests.support.k8s_schemas import CRDS, INFERENCESERVICE_CRD, PYTORCHJOB_CRD, TRAINJOB_CRD, TRAINJOB_V21_CRD
from tests.support.kserve_runtime import merged_pod_errors

K8S = Path(__file__).resolve().parents[1] / "k8s"
K8S_VERSION = "1.33.0"
"""Kubernetes version whose built-in schemas kubernetes-validate checks against (one it ships)."""
BUILTIN_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "batch/v1", "policy/v1")
NO_CRD_AT_HAND = {"monitoring.coreos.com/v1/PodMonitor"}
"""Custom kinds with no CRD schema in tests/schemas: checked for consistency below, not against a schema."""

EXAMPLE_JOB = TrainingJobSpec(
    name="asymvae-sd15-x15",
    namespace="asymvae",
    image="asymvae:0.1.0",
    config="asymmetric_autoencoderkl_sdv15_pokemon",
    nodes=2,
    gpus_per_node=8,
    shards_uri="s3://asymvae/shards/pokemon",
    credentials_secret="mlpipeline-minio-artifact",
    s3_endpoint="minio-service.asymvae:9000",
    output_pvc="asymvae-runs",
    memory="200Gi",
)
"""The job committed as k8s/training/pytorchjob.yaml and k8s/training-v2/trainjob.yaml."""
EXAMPLE_ISVC = InferenceServiceSpec(
    name="asymvae-decoder",
    storage_uri="s3://asymvae/triton",
    namespace="asymvae",
    tolerations=[t.to_dict() for t in gpu_tolerations()],
)
"""The InferenceService committed as k8s/serving/inferenceservice.yaml."""
EXAMPLE_PREDICTOR = InferenceServiceSpec(
    name="asymvae-decoder",
    storage_uri="s3://asymvae/diffusers",
    runtime="predictor",
    image="asymvae:0.1.0",
    namespace="asymvae",
    tolerations=[t.to_dict() for t in gpu_tolerations()],
)
"""The custom predictor (`asymvae serve`) committed as k8s/serving-predictor/inferenceservice.yaml."""
GOLDEN = {
    "training/pytorchjob.yaml": (
        "asymvae.cluster.pytorchjob.build_pytorchjob(EXAMPLE_JOB)",
        build_pytorchjob,
        EXAMPLE_JOB,
    ),
    "training-v2/trainjob.yaml": ("asymvae.cluster.trainjob.build_trainjob(EXAMPLE_JOB)", build_trainjob, EXAMPLE_JOB),
    "serving/inferenceservice.yaml": (
        "asymvae.serving.inferenceservice.build_inferenceservice(EXAMPLE_ISVC)",
        build_inferenceservice,
        EXAMPLE_ISVC,
    ),
    "serving-predictor/inferenceservice.yaml": (
        "asymvae.serving.inferenceservice.build_inferenceservice(EXAMPLE_PREDICTOR)",
        build_inferenceservice,
        EXAMPLE_PREDICTOR,
    ),
}
"""Committed manifests that are exactly a builder's output (file under k8s/: (what, builder, its spec))."""


def manifests() -> list[tuple[Path, dict]]:
    """(file, document) for every resource document under k8s/ (kustomization files excluded)."""
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def kind_key(doc: dict) -> str:
    return f"{doc['apiVersion']}/{doc['kind']}"


def crd_for(doc: dict) -> Path | None:
    group = doc["apiVersion"].rpartition("/")[0]
    for path in sorted(CRDS.glob("*.yaml")):
        crd_group, kind, _ = crd_identity(path)
        if crd_group == group and kind == doc["kind"] and path != TRAINJOB_V21_CRD:  # k8s/ is for Trainer v2.2+
            return path
    return None


def committed(name: str) -> dict:
    """The one document of k8s/NAME."""
    (doc,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return doc


def find(kind: str, name: str | None = None) -> dict:
    docs = [d for _, d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(docs) == 1, f"expected one {kind} {name or ''} under k8s/, found {len(docs)}"
    return docs[0]


def rel(path: Path) -> str:
    return str(path.relative_to(K8S.parent))


# -- the committed PyTorchJob is the builder's -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_committed_manifests_are_what_the_builders_make(name):
    what, builder, spec = GOLDEN[name]
    path = K8S / name
    header = (
        f"# Generated from {what} in tests/test_k8s_manifests.py.\n"
        "# Regenerate: ASYMVAE_UPDATE_MANIFESTS=1 pytest tests/test_k8s_manifests.py\n"
    )
    expected = header + yaml.safe_dump(builder(spec), sort_keys=False)
    if os.environ.get("ASYMVAE_UPDATE_MANIFESTS") == "1":
        path.write_text(expected)
    assert path.read_text() == expected, (
        f"{rel(path)} is stale: ASYMVAE_UPDATE_MANIFESTS=1 pytest {rel(Path(__file__))}"
    )


# -- schemas -------------------------------------------------------------------------------------------


def _schema_checked() -> list[tuple[Path, dict]]:
    """Every manifest whose kind has a schema here: built-in kinds and the CRDs in tests/schemas."""
    return [(path, doc) for path, doc in manifests() if kind_key(doc) not in NO_CRD_AT_HAND]


@pytest.mark.parametrize("path, doc", _schema_checked(), ids=lambda v: rel(v) if isinstance(v, Path) else v["kind"])
def test_every_manifest_matches_its_schema(path, doc):
    if doc["apiVersion"] in BUILTIN_GROUPS:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    crd = crd_for(doc)
    assert crd is not None, f"{rel(path)}: no CRD for {kind_key(doc)} in {CRDS}"
    assert schema_errors(doc, crd) == [], rel(path)


def test_only_the_podmonitor_goes_without_a_schema():
    """The Prometheus Operator's PodMonitor CRD is not kept here; the PodMonitor is checked for consistency
    with the pods it selects instead (below). Every other kind must have a schema."""
    unchecked = {kind_key(d) for _, d in manifests()} - {kind_key(d) for _, d in _schema_checked()}
    assert unchecked == NO_CRD_AT_HAND


def test_each_crd_is_used_by_some_manifest():
    kinds = {kind_key(d) for _, d in manifests()}
    for crd in (PYTORCHJOB_CRD, TRAINJOB_CRD, INFERENCESERVICE_CRD):
        group, kind, versions = crd_identity(crd)
        assert any(f"{group}/{v}/{kind}" in kinds for v in versions), f"no manifest of {kind}"


@pytest.mark.parametrize(
    "kind, where, typo",
    [
        ("serving/inferenceservice.yaml", lambda d: d["spec"]["predictor"]["model"], "storageURI"),
        ("serving/inferenceservice.yaml", lambda d: d["spec"]["predictor"], "serviceAcountName"),
        ("serving-predictor/inferenceservice.yaml", lambda d: d["spec"]["predictor"]["containers"][0], "comand"),
        ("TrainJob", lambda d: d["spec"]["trainer"], "numProcsPerNode"),
        (
            "TrainJob",
            lambda d: d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
                "template"
            ]["spec"]["template"]["spec"],
            "toleration",
        ),
    ],
)
def test_a_misspelt_field_fails_the_crd_schema(kind, where, typo):
    """`kind`: a kind found once under k8s/, or a file there."""
    doc = copy.deepcopy(committed(kind) if kind.endswith(".yaml") else find(kind))
    where(doc)[typo] = "x"
    errors = schema_errors(doc, crd_for(doc))
    assert len(errors) == 1 and typo in errors[0], errors


def test_strict_validation_catches_a_misspelt_field_of_a_builtin_kind():
    doc = copy.deepcopy(find("StatefulSet", "minio"))
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolice"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# -- kustomize -----------------------------------------------------------------------------------------


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def test_kustomizations_list_existing_files_and_every_manifest_is_listed():
    listed: set[Path] = set()
    for kust in kustomizations():
        data = yaml.safe_load(kust.read_text())
        for entry in data.get("resources", []):
            target = (kust.parent / entry).resolve()
            assert target.exists(), f"{rel(kust)} lists {entry}, which does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{rel(kust)}: {entry} has no kustomization.yaml"
            else:
                listed.add(target)
    unlisted = [rel(p) for p, _ in manifests() if p.resolve() not in listed]
    assert not unlisted, f"manifests no kustomization.yaml lists: {unlisted}"


KUBECTL = shutil.which("kubectl") or shutil.which("kustomize")
KUSTOMIZE_NAMESPACES = {"k8s/profile": "kubeflow-user-example-com", "k8s/standalone": "kubeflow"}
"""The namespace each overlay puts everything in (the others: `asymvae`, or none for the shared parts)."""


def kustomize(folder: str) -> list[dict]:
    """The documents `kubectl kustomize k8s/FOLDER` renders."""
    cmd = (
        [KUBECTL, "kustomize", str(K8S / folder)]
        if KUBECTL.endswith("kubectl")
        else [KUBECTL, "build", str(K8S / folder)]
    )
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


@pytest.mark.skipif(KUBECTL is None, reason="neither kubectl nor kustomize is installed")
@pytest.mark.parametrize("kust", kustomizations(), ids=lambda p: rel(p.parent))
def test_kustomize_builds_and_its_output_still_validates(kust):
    docs = kustomize(str(kust.parent.relative_to(K8S)) if kust.parent != K8S else ".")
    assert docs
    wanted = KUSTOMIZE_NAMESPACES.get(rel(kust.parent), "asymvae")
    for doc in docs:
        assert doc["metadata"].get("namespace", wanted) == wanted or doc["kind"] == "Namespace"
        if doc["apiVersion"] in BUILTIN_GROUPS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        elif crd_for(doc) is not None:
            assert schema_errors(doc, crd_for(doc)) == []


# -- the pieces fit together -----------------------------------------------------------------------


def test_podmonitor_selects_the_master_pod_the_builder_makes_and_its_metrics_port():
    monitor = find("PodMonitor")
    job = build_pytorchjob(EXAMPLE_JOB)
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    # The operator adds the job-name and replica-type labels to the pods it creates from the template.
    pod_labels = {**master["metadata"]["labels"], JOB_NAME_LABEL: job["metadata"]["name"], REPLICA_TYPE_LABEL: "master"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert selector[REPLICA_TYPE_LABEL] == "master"  # only rank 0 serves /metrics
    ports = {p["name"] for p in master["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    assert job_labels(EXAMPLE_JOB)["app.kubernetes.io/component"] == selector["app.kubernetes.io/component"]


RUN_REQUESTS = [
    # (API group, resource, verb): every request the train step (runner) and the deploy step make
    *[("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "patch", "delete")],
    *[("trainer.kubeflow.org", "trainjobs", v) for v in ("create", "get", "patch", "delete")],
    *[("serving.kserve.io", "inferenceservices", v) for v in ("create", "get", "update")],
    ("", "pods", "list"),
    ("", "pods/log", "get"),
]
"""The stand-in API enforces `kubeflow-edit` (a profile's run account) on the step tests
(tests/test_train_step_kubeflow.py, the deploy component's tests), so a request missing here and there fails
those tests too; k8s/rbac's Role (the standalone kit) is checked against this list below."""


def test_the_run_role_allows_what_the_steps_do_and_nothing_cluster_wide():
    role = find("Role", "asymvae-run")
    rules = role["rules"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)

    for request in RUN_REQUESTS:
        assert allowed(*request), f"k8s/rbac/role.yaml does not allow {request}"
    assert allowed("", "persistentvolumeclaims", "get")
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "secrets" in r["resources"] for r in rules)
    assert {d["kind"] for _, d in manifests()}.isdisjoint({"ClusterRole", "ClusterRoleBinding"})
    binding = find("RoleBinding", "asymvae-run")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "asymvae-run"}


@pytest.mark.skipif(KUBECTL is None, reason="neither kubectl nor kustomize is installed")
def test_the_standalone_kit_binds_the_role_to_the_run_account_of_its_namespace():
    docs = kustomize("standalone")
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    kinds = {d["kind"]: d for d in docs}
    assert {"Role", "RoleBinding", "Secret", "ServiceAccount"} == set(kinds)
    assert all(d["metadata"]["namespace"] == "kubeflow" for d in docs)
    assert kinds["ServiceAccount"]["metadata"]["name"] == "asymvae-serving"  # the deploy step's default


KINDS = {
    # kind -> (API group, resource) for the RBAC check; PodMonitor's CRD is not part of a Kubeflow install
    "Secret": ("", "secrets"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "PodMonitor": ("monitoring.coreos.com", "podmonitors"),
}
STOCK_KINDS = {"Secret", "ServiceAccount", "PersistentVolumeClaim", "Role", "RoleBinding"}
"""Kinds a stock Kubeflow 26.03 serves among those (kubeflow/manifests example/kustomization.yaml installs no
Prometheus Operator)."""


def kit(folder: str) -> list[dict]:
    """The documents of the kustomization in k8s/FOLDER and everything it lists, read without kustomize."""
    data = yaml.safe_load((K8S / folder / "kustomization.yaml").read_text())
    docs = []
    for entry in data.get("resources", []):
        target = (K8S / folder / entry).resolve()
        if target.is_dir():
            docs += kit(str(target.relative_to(K8S)))
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    return docs


def owner_refusals(docs: list[dict], owner_rules: list[dict]) -> list[str]:
    """What `kubectl apply` by a profile owner holding `owner_rules` would be refused: kinds the cluster does not
    serve, objects the owner may not create, and Roles granting more than the owner holds (Kubernetes' RBAC
    escalation check, kubernetes/pkg/registry/rbac/validation/rule.go ConfirmNoEscalation)."""
    refused = []
    for doc in docs:
        kind = doc["kind"]
        if kind not in STOCK_KINDS:
            refused.append(f"{kind}: no such kind on a stock install (its CRD is not installed)")
            continue
        if not allows(owner_rules, *KINDS[kind], "create"):
            refused.append(f"{kind}: the owner may not create it")
        for rule in doc.get("rules", []) if kind == "Role" else []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        if not allows(owner_rules, group, resource, verb):
                            refused.append(
                                f"Role {doc['metadata']['name']} grants {verb} {resource}, which the owner lacks"
                            )
    return refused


def test_the_profile_kit_applies_as_a_profile_owner_of_a_stock_install():
    """The profile's owner holds `kubeflow-admin` in the namespace (profile_controller.go, RoleBinding
    namespaceAdmin); the kit must apply with that alone. The old kit could not: a PodMonitor (no CRD) and a
    Role granting pytorchjobs, which a stock install gives nobody."""
    owner = kubeflow_role_rules("kubeflow-admin")
    assert owner_refusals(kit("profile"), owner) == []
    old = [*kit("rbac"), *kit("monitoring")]
    assert any("PodMonitor" in r for r in owner_refusals(old, owner))
    assert any("pytorchjobs" in r for r in owner_refusals(old, owner))


def test_the_profiles_run_account_may_do_what_the_steps_do():
    """`default-editor` holds `kubeflow-edit` (profile_controller.go): everything the train step (TrainJobs) and
    the deploy step do; PyTorchJobs where the training operator's roles are installed too."""
    stock = kubeflow_role_rules("kubeflow-edit")
    for request in RUN_REQUESTS:
        if request[1] != "pytorchjobs":
            assert allows(stock, *request), f"kubeflow-edit does not allow {request}"
    assert not allows(stock, "kubeflow.org", "pytorchjobs", "create")
    with_operator = kubeflow_role_rules("kubeflow-edit", WITH_TRAINING_OPERATOR)
    assert all(allows(with_operator, *request) for request in RUN_REQUESTS)


@pytest.mark.parametrize("name", ["serving/inferenceservice.yaml", "serving-predictor/inferenceservice.yaml"])
def test_serving_credentials_are_wired_as_kserve_expects(name):
    isvc = committed(name)
    predictor = isvc["spec"]["predictor"]
    if "model" in predictor:
        assert predictor["model"]["modelFormat"]["name"] == "onnx"
        assert predictor["model"]["runtime"] == "kserve-tritonserver"
        storage_uri = predictor["model"]["storageUri"]
    else:  # a custom predictor: STORAGE_URI of kserve-container (kserve v0.16.0 predictor_custom.go)
        (container,) = predictor["containers"]
        assert container["name"] == "kserve-container"
        storage_uri = {e["name"]: e["value"] for e in container["env"]}["STORAGE_URI"]
    assert storage_uri.startswith("s3://")
    assert merged_pod_errors(isvc) == []  # the pod KServe makes of it is valid
    account = find("ServiceAccount", predictor["serviceAccountName"])
    secret = find("Secret", account["secrets"][0]["name"])
    notes = secret["metadata"]["annotations"]
    assert notes["serving.kserve.io/s3-usehttps"] == "0" and notes["serving.kserve.io/s3-endpoint"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret["stringData"].keys()


def test_minio_and_the_training_job_use_the_same_secret_and_endpoint():
    secret = find("Secret", "mlpipeline-minio-artifact")
    sts = find("StatefulSet", "minio")
    refs = [e["valueFrom"]["secretKeyRef"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert all(r["name"] == secret["metadata"]["name"] and r["key"] in secret["stringData"] for r in refs)
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":RELEASE." in image  # pinned, never :latest
    service = find("Service", "minio-service")
    assert EXAMPLE_JOB.s3_endpoint == f"{service['metadata']['name']}.{service['metadata']['namespace']}:9000"
    assert set(EXAMPLE_JOB.credentials_keys.values()) <= secret["stringData"].keys()
    assert EXAMPLE_JOB.credentials_secret == secret["metadata"]["name"]
    assert EXAMPLE_JOB.output_pvc == find("PersistentVolumeClaim")["metadata"]["name"]


def test_the_committed_trainjob_passes_trainers_webhook_rules():
    assert trainjob_webhook_errors(find("TrainJob")) == []


def test_the_committed_trainjob_is_the_v2_2_form_and_its_v2_1_form_fits_trainer_v2_1_0():
    """k8s/training-v2 is for Trainer v2.2 and later (spec.runtimePatches); on Kubeflow 26.03's Trainer v2.1.0
    the same job is written as spec.podTemplateOverrides (docs/cluster.md), which v2.1.0's CRD takes."""
    job = find("TrainJob")
    assert "runtimePatches" in job["spec"] and "podTemplateOverrides" not in job["spec"]
    assert any("'runtimePatches' was unexpected" in e for e in schema_errors(job, TRAINJOB_V21_CRD))
    older = in_form(job, POD_TEMPLATE_OVERRIDES)
    assert older == build_trainjob(EXAMPLE_JOB, POD_TEMPLATE_OVERRIDES)
    assert schema_errors(older, TRAINJOB_V21_CRD) == [] and trainjob_webhook_errors(older) == []
