"""The Kubernetes stand-in's own rules, each shown failing: authentication, namespaces, resourceVersion
conflicts, unknown fields (pruned, or refused under strict field validation), and an InferenceService made
invalid by KServe's runtime merge."""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from asymvae.cluster import trainjob
from asymvae.cluster.jobspec import TrainingJobSpec
from asymvae.serving.inferenceservice import GROUP, PLURAL, VERSION, InferenceServiceSpec, build_inferenceservice
from tests.support.fake_kube import FakeKubeServer

NS = "team-a"


@pytest.fixture
def cluster():
    server = FakeKubeServer(service_account=(NS, "default-editor"))
    with server as state:
        yield server, state


def _isvc(**changes) -> dict:
    return build_inferenceservice(InferenceServiceSpec(name="d", storage_uri="s3://b/p", namespace=NS, **changes))


def test_no_token_is_unauthorized_and_another_namespace_forbidden(cluster) -> None:
    server, _ = cluster
    with pytest.raises(ApiException) as no_token:
        k8s.CustomObjectsApi(server.api_client(token=None)).list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert no_token.value.status == 401
    with pytest.raises(ApiException) as elsewhere:
        k8s.CoreV1Api(server.api_client()).list_namespaced_pod("kubeflow")
    message = json.loads(elsewhere.value.body)["message"]
    assert elsewhere.value.status == 403 and 'cannot list resource "pods" in the namespace "kubeflow"' in message


def test_a_replace_with_a_stale_resource_version_conflicts(cluster) -> None:
    server, _ = cluster
    api = k8s.CustomObjectsApi(server.api_client())
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, _isvc())
    stale = {**created, "metadata": {**created["metadata"]}}
    api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d", created)
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d", stale)
    assert conflict.value.status == 409


def test_trainer_v2_1_prunes_runtime_patches_by_default_and_refuses_them_under_strict_validation() -> None:
    """What the API server does with a field the CRD lacks (here Trainer v2.1.0's TrainJob, which has no
    spec.runtimePatches): by default (`Warn`) the object is created without it, losing the pod template; with
    `fieldValidation=Strict` it is refused, HTTP 400, in kube-apiserver's words."""
    job = trainjob.build_trainjob(TrainingJobSpec(name="run1", namespace=NS, image="asymvae:1"))
    args = (trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, job)
    server = FakeKubeServer(service_account=(NS, "default-editor"), trainer="v2.1")
    with server as state:
        api = k8s.CustomObjectsApi(server.api_client())
        with pytest.raises(ApiException) as strict:
            api.create_namespaced_custom_object(*args, field_validation="Strict")
        created = api.create_namespaced_custom_object(*args)
    body = json.loads(strict.value.body)
    assert strict.value.status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == (
        'TrainJob in version "v1alpha1" cannot be handled as a TrainJob: strict decoding error: '
        'unknown field "spec.runtimePatches"'
    )
    assert "runtimePatches" not in created["spec"] and created["spec"]["trainer"] == job["spec"]["trainer"]
    assert state.strict_refusals == state.pruned == [["spec.runtimePatches"]]


def _ready_condition(api: k8s.CustomObjectsApi) -> dict:
    conditions = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Ready")


def test_an_inferenceservice_broken_by_the_runtime_merge_never_becomes_ready(cluster) -> None:
    server, state = cluster
    state.rollout_reads = 0  # each read shows the rollout finished
    api = k8s.CustomObjectsApi(server.api_client())
    broken = _isvc()
    del broken["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"]  # CPU request 2, runtime limit 1
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, broken)
    ready = _ready_condition(api)
    assert ready["status"] == "False" and "must be less than or equal to the cpu limit of 1" in ready["message"]
    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, _isvc())
    assert _ready_condition(api)["status"] == "True"


def _rollout(api: k8s.CustomObjectsApi) -> tuple:
    """(generation, Ready, observedGeneration, latest created revision, latest ready revision) at one read."""
    isvc = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")
    status, ready = isvc["status"], {}
    if status:
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    predictor = status.get("components", {}).get("predictor", {})
    return (
        isvc["metadata"]["generation"],
        ready.get("status"),
        status.get("observedGeneration"),
        predictor.get("latestCreatedRevision", "")[-5:],
        predictor.get("latestReadyRevision", "")[-5:],
    )


def test_an_inferenceservice_rolls_out_as_kserve_and_knative_report_it(cluster) -> None:
    """Each read is one step of the controllers: KServe's write of the Knative Service (the status it then
    copies is the Service's from before), Knative's new revision, that revision ready. The same spec again
    keeps the generation and starts nothing; another spec raises it and rolls out a new revision."""
    server, _ = cluster
    api = k8s.CustomObjectsApi(server.api_client())
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, _isvc())
    assert [_rollout(api) for _ in range(3)] == [
        (1, None, None, "", ""),
        (1, "Unknown", 1, "00001", ""),
        (1, "True", 1, "00001", "00001"),
    ]
    current = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")
    again = {**created, "metadata": {**created["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
    api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d", again)
    assert _rollout(api) == (1, "True", 1, "00001", "00001")
    changed = _isvc(gpus=0)
    changed["metadata"]["resourceVersion"] = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")[
        "metadata"
    ]["resourceVersion"]
    api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d", changed)
    assert [_rollout(api) for _ in range(3)] == [
        (2, "True", 1, "00001", "00001"),  # Ready, but the old revision: what KServe writes after its update
        (2, "Unknown", 2, "00002", "00001"),
        (2, "True", 2, "00002", "00002"),
    ]
