"""The deploy step: its InferenceService valid against KServe's real CRD and still valid once KServe merges the
`kserve-tritonserver` runtime into it, with Knative's progress deadline; applied through the stand-in
Kubernetes API as the run's account, whose InferenceService status follows KServe's and Knative's
controllers (tests/support/fake_kube.py); ready only once its own revision serves; and checked with one real
inference (onnxruntime behind the v2 protocol) at the address the service reports, through the stand-in of
Kubeflow's machine-to-machine auth gateway (tests/support/m2m_gateway.py) with the pod's token."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kfp.dsl import Artifact, Markdown, Model

from asymvae.cluster.pod import IMAGE_ENV, NAMESPACE_ENV
from asymvae.export.config import ExportConfig
from asymvae.export.run import export_model
from asymvae.serving.client import ServingError
from asymvae.serving.inferenceservice import (
    DeploymentError,
    InferenceServiceSpec,
    build_inferenceservice,
    cluster_local_auth,
    storage_uri,
)
from asymvae.steps.deploy import DeployStepConfig, deploy_step
from asymvae_components.deploy.component import deploy
from tests.support.crd import schema_errors, validate_custom_object
from tests.support.fake_kube import FakeKubeServer, condition
from tests.support.k8s_rbac import kubeflow_role_rules
from tests.support.k8s_schemas import INFERENCESERVICE_CRD
from tests.support.kserve_runtime import merged_pod_errors
from tests.support.m2m_gateway import M2MGateway, cluster_dns
from tests.support.serve import Served, asymvae_serve
from tests.support.tritonserver import TritonServer

NS = "kubeflow-user-example-com"
STORE = "s3://mlpipeline/private-artifacts/kubeflow-user-example-com/v2/artifacts/asymvae/run-1/export-2/exported"


@pytest.mark.parametrize("gpus", [0, 1])
def test_inferenceservice_matches_the_crd_and_survives_kserves_runtime_merge(gpus: int) -> None:
    obj = build_inferenceservice(
        InferenceServiceSpec(name="asymvae-decoder", storage_uri="s3://mlpipeline/v2/artifacts/x/exported", gpus=gpus)
    )
    validate_custom_object(obj, INFERENCESERVICE_CRD)
    assert merged_pod_errors(obj) == []
    assert storage_uri(obj) == "s3://mlpipeline/v2/artifacts/x/exported"
    model = obj["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://mlpipeline/v2/artifacts/x/exported"
    assert ("nvidia.com/gpu" in model["resources"]["limits"]) == bool(gpus)
    assert obj["spec"]["predictor"]["serviceAccountName"] == "asymvae-serving"
    # Knative's per-revision deadline, where KServe copies it onto the revision template (predictor.go)
    assert obj["spec"]["predictor"]["annotations"] == {"serving.knative.dev/progress-deadline": "1800s"}


def test_a_cpu_request_without_its_own_limit_breaks_after_the_merge() -> None:
    """What the deploy step used to send (requests.cpu 2, no CPU limit): the runtime's limit of 1 is merged in
    and the pod is invalid. The builder therefore sets every limit itself."""
    obj = build_inferenceservice(InferenceServiceSpec(name="d", storage_uri="s3://b/p"))
    old = copy.deepcopy(obj)
    del old["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"]
    assert schema_errors(old, INFERENCESERVICE_CRD) == []  # the CRD accepts it: only the merge shows the problem
    (error,) = merged_pod_errors(old)
    assert "requests.cpu: 2 must be less than or equal to the cpu limit of 1" in error


def test_a_misspelt_field_fails_the_schema() -> None:
    obj = build_inferenceservice(InferenceServiceSpec(name="d", storage_uri="s3://b/p"))
    obj["spec"]["predictor"]["model"]["storageURI"] = obj["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in schema_errors(obj, INFERENCESERVICE_CRD))


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="DNS label"):
        InferenceServiceSpec(name="Bad_Name", storage_uri="s3://b/p")
    with pytest.raises(ValueError, match="KServe can download"):
        InferenceServiceSpec(name="d", storage_uri="/local/path")  # a kfp.local artifact cannot be served
    with pytest.raises(ValueError, match="progress_deadline_s must be at least 1 second"):
        InferenceServiceSpec(name="d", storage_uri="s3://b/p", progress_deadline_s=0)


def test_the_wait_outlasts_knatives_progress_deadline() -> None:
    """Kubeflow's Knative gives a revision 600 s (config-deployment); a cold pull of the Triton image can take
    longer, so the InferenceService sets its own deadline, and the step waits longer than that deadline."""
    default = DeployStepConfig()
    assert default.progress_deadline_s > 600 and default.ready_timeout_s > default.progress_deadline_s
    with pytest.raises(DeploymentError, match=r"ready_timeout_s \(900 s\) must exceed progress_deadline_s \(1800 s\)"):
        DeployStepConfig(ready_timeout_s=900)


@pytest.mark.parametrize(
    "url, sent",
    [
        (f"http://asymvae-decoder.{NS}.svc.cluster.local", True),  # KServe's status.address.url
        (f"http://asymvae-decoder-predictor.{NS}.svc.cluster.local:80/v2", True),  # disableIstioVirtualHost
        (f"http://asymvae-decoder.{NS}.svc", True),
        (f"http://asymvae-decoder.{NS}.svc.cluster.local.example.com", False),
        (f"http://asymvae-decoder.{NS}.svc.cluster.local@example.com/", False),  # the host is example.com
        (f"http://asymvae-decoder-{NS}.example.com", False),  # status.url, through the ingress
        ("http://asymvae-decoder.other-team.svc.cluster.local", False),
        (f"http://another-service.{NS}.svc.cluster.local", False),
        ("http://127.0.0.1:8080", False),
    ],
)
def test_the_pods_token_goes_to_the_services_own_cluster_local_address_only(tmp_path: Path, url: str, sent: bool):
    token = tmp_path / "token"
    token.write_text("pod-token\n")
    expected = {"Authorization": "Bearer pod-token"} if sent else {}
    assert cluster_local_auth(url, "asymvae-decoder", NS, token) == expected
    assert cluster_local_auth(url, "asymvae-decoder", NS, tmp_path / "absent") == {}  # outside a pod: none


# -- the step, against the stand-ins (gate off: these test the rollout; test_deploy_gate_runs.py the gate)


@pytest.fixture(scope="module")
def repository(asym_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy") / "exported"
    export_model(ExportConfig(str(asym_export_dir), "triton", str(root), name="asymvae_decoder"))
    return root


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """Triton serving the export (tests/support/tritonserver.py): the address the InferenceService reports."""
    with TritonServer(repository, tmp_path_factory.mktemp("tritonserver")) as url:
        yield url


def _cluster() -> FakeKubeServer:
    return FakeKubeServer(service_account=(NS, "default-editor"), rbac_rules=kubeflow_role_rules("kubeflow-edit"))


def test_deploys_in_its_namespace_waits_for_ready_and_checks_an_inference(
    repository: Path, triton: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    server = _cluster()
    with server as fake:
        fake.isvc_url = triton
        cfg = DeployStepConfig(gate="off", gpus=1, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"}, poll_s=0.01)
        done = deploy_step(cfg, str(repository), STORE, server.api_client())
        again = deploy_step(cfg, str(repository), STORE, server.api_client())
    assert not fake.refused
    assert (done.action, again.action) == ("created", "updated")
    created = fake.calls("POST", f"/namespaces/{NS}/inferenceservices")[0]  # the second POST got a 409
    assert len(fake.calls("PUT", f"/namespaces/{NS}/inferenceservices/asymvae-decoder")) == 1
    predictor = created.body["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert done.url == triton and done.model == "asymvae_decoder"
    assert done.check.output_shape == [1, 3, 64, 64]


def test_a_service_that_never_becomes_ready_fails_the_step_with_kserves_reason(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    stuck = {"conditions": [condition("Ready", "RevisionMissing", "Configuration is waiting for a Revision", "False")]}
    server = _cluster()
    with server as fake:
        fake.script("asymvae-decoder", [stuck])
        cfg = DeployStepConfig(gate="off", ready_timeout_s=1.2, progress_deadline_s=1, poll_s=0.01)
        with pytest.raises(DeploymentError, match="not Ready within 1.2 s: Ready: RevisionMissing Configuration is"):
            deploy_step(cfg, str(repository), STORE, server.api_client())


@pytest.mark.parametrize(
    "generation, ksvc_generation", [(1, 3), (4, 1)], ids=["knative-service-ahead", "knative-service-made-again"]
)
def test_an_update_is_ready_once_its_own_revision_serves(
    repository: Path, triton: str, monkeypatch: pytest.MonkeyPatch, generation: int, ksvc_generation: int
) -> None:
    """The InferenceService's observedGeneration is its Knative Service's (kserve v0.16.0
    inference_service_status.go), a counter of its own. Ahead of the InferenceService's (a ServingRuntime
    changed twice), the old check, observedGeneration >= generation with Ready, took the status KServe writes
    right after the update (the Knative Service's old one: Ready, the old revision) for the new spec; behind
    it (the Knative Service made again) it never saw Ready. The step waits for the revision that replaces the
    one serving before the update."""
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    before = build_inferenceservice(
        InferenceServiceSpec(name="asymvae-decoder", storage_uri=STORE.replace("run-1", "run-0"), namespace=NS)
    )
    server = _cluster()
    with server as fake:
        fake.isvc_url = triton
        fake.add_existing_inferenceservice(before, generation, ksvc_generation)
        cfg = DeployStepConfig(gate="off", ready_timeout_s=2.0, progress_deadline_s=1, poll_s=0.01)
        done = deploy_step(cfg, str(repository), STORE, server.api_client())
    assert done.action == "updated" and done.manifest["spec"]["predictor"]["model"]["storageUri"] == STORE
    assert done.revision == f"asymvae-decoder-predictor-{ksvc_generation + 1:05d}"


def test_a_service_outside_kserves_serverless_mode_is_refused_at_once(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    raw = {"deploymentMode": "RawDeployment", "conditions": [condition("Ready", "Ready")]}
    server = _cluster()
    with server as fake:
        fake.script("asymvae-decoder", [raw])
        with pytest.raises(DeploymentError, match="runs in KServe's RawDeployment deployment mode"):
            deploy_step(DeployStepConfig(gate="off", poll_s=0.01), str(repository), STORE, server.api_client())
        assert len(fake.calls("GET", "/inferenceservices/asymvae-decoder")) == 1


def test_under_machine_to_machine_auth_the_check_carries_the_pods_current_token(
    repository: Path, triton: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind Kubeflow's cluster-local gateway with the m2m-auth overlay, a request without a Kubernetes token
    gets 403 (what the step sent before, and sends outside a pod); the step sends the pod's token, read
    afresh for each check (the kubelet rotates it)."""
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    cluster_dns(monkeypatch)
    token = tmp_path / "token"
    host = f"asymvae-decoder.{NS}.svc.cluster.local"
    server = _cluster()
    with server as fake:
        gateway = M2MGateway({host: triton}, tokens={"token-1"})
        with gateway as port:
            fake.isvc_url = f"http://{host}:{port}"
            cfg = DeployStepConfig(gate="off", poll_s=0.01, token_file=str(token))
            with pytest.raises(ServingError, match="answered HTTP 403: RBAC: access denied"):
                deploy_step(cfg, str(repository), STORE, server.api_client())  # no token file
            token.write_text("token-1\n")
            first = deploy_step(cfg, str(repository), STORE, server.api_client())
            token.write_text("token-2\n")  # rotated: the old one has expired
            gateway.tokens = {"token-2"}
            second = deploy_step(cfg, str(repository), STORE, server.api_client())
    assert first.check.output_shape == second.check.output_shape == [1, 3, 64, 64]
    assert gateway.seen == [None, "Bearer token-1", "Bearer token-2"]


def test_an_address_on_another_host_gets_no_token(
    repository: Path, triton: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    token = tmp_path / "token"
    token.write_text("token-1\n")
    server = _cluster()
    with server as fake:
        gateway = M2MGateway({"127.0.0.1": triton}, tokens={"token-1"})
        with gateway as port:
            fake.isvc_url = f"http://127.0.0.1:{port}"  # not the service's cluster-local name
            with pytest.raises(ServingError, match="answered HTTP 403"):
                deploy_step(
                    DeployStepConfig(gate="off", poll_s=0.01, token_file=str(token)),
                    str(repository),
                    STORE,
                    server.api_client(),
                )
    assert gateway.seen == [None]


class _Downloaded(Model):
    """A Model artifact in the store whose copy the launcher put at `local` (on a cluster: under /minio/...)."""

    local = ""

    @property
    def path(self) -> str:
        return self.local


def _use_kubeconfig(server: FakeKubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the component's Kubernetes client (it makes its own) at the stand-in, as the run's account in NS."""
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(server.kubeconfig(NS)))
    # the kubernetes client read $KUBECONFIG when it was imported: point its default there
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv(NAMESPACE_ENV, NS)


def test_the_component_deploys_through_the_kubeconfig_and_records_the_check(
    repository: Path, triton: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _cluster()
    with server as fake:
        fake.isvc_url = triton
        fake.rollout_reads = 0  # rolled out by the first read: the component polls every 10 s
        _use_kubeconfig(server, tmp_path, monkeypatch)
        exported = _Downloaded(name="exported", uri="minio://" + STORE.removeprefix("s3://"))
        exported.local = str(repository)
        manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
        verdict = Markdown(name="verdict", uri=str(tmp_path / "verdict"))
        action = deploy.python_func(exported=exported, manifest=manifest, verdict=verdict, gpus=0, gate="off")
    assert action == "created" and not fake.refused
    written = yaml.safe_load((tmp_path / "manifest").read_text())
    assert written["spec"]["predictor"]["model"]["storageUri"] == STORE
    assert manifest.metadata["url"] == triton and manifest.metadata["model"] == "asymvae_decoder"
    assert manifest.metadata["output_shape"] == [1, 3, 64, 64]
    assert manifest.metadata["gate_deploy"] is True and "gate is off" in (tmp_path / "verdict").read_text()


# -- runtime=predictor: `asymvae serve` on the project's image -----------------------------------------

STORE_HF = STORE.replace("export-2", "export-1")
"""Where the diffusers export lies in the store (the export task of format diffusers)."""
IMAGE = "registry.example.com/asymvae:0.1.0"


@pytest.mark.parametrize("gpus", [0, 1])
def test_the_custom_predictor_matches_the_crd_and_makes_a_valid_pod(gpus: int) -> None:
    """kserve v0.16.0 predictor_custom.go: the container named kserve-container is the predictor and its
    STORAGE_URI the model KServe's storage initializer puts in /mnt/models; no runtime is merged into it."""
    spec = InferenceServiceSpec(name="asymvae-decoder", storage_uri=STORE_HF, runtime="predictor", image=IMAGE,
                                gpus=gpus)  # fmt: skip
    obj = build_inferenceservice(spec)
    validate_custom_object(obj, INFERENCESERVICE_CRD)
    assert merged_pod_errors(obj) == []
    predictor = obj["spec"]["predictor"]
    assert "model" not in predictor and predictor["serviceAccountName"] == "asymvae-serving"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == IMAGE
    assert container["command"] + container["args"] == [
        "asymvae", "serve", "/mnt/models", "--name", "asymvae_decoder", "--http-port", "8080", "--grpc-port", "0",
    ]  # fmt: skip
    assert container["env"] == [{"name": "STORAGE_URI", "value": STORE_HF}, {"name": "PROTOCOL", "value": "v2"}]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert resources["limits"] == {"cpu": "2", "memory": "16Gi", **({"nvidia.com/gpu": "1"} if gpus else {})}


def test_the_custom_predictors_pod_is_checked_as_written() -> None:
    """No runtime fills in what the predictor leaves out: a GPU request above its limit makes an invalid pod."""
    obj = build_inferenceservice(
        InferenceServiceSpec(name="d", storage_uri="s3://b/p", runtime="predictor", image=IMAGE)
    )
    obj["spec"]["predictor"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    assert merged_pod_errors(obj) == ["resources.requests.nvidia.com/gpu: 2 must be less than or equal to the "
                                      "nvidia.com/gpu limit of 1",
                                      "resources.requests.nvidia.com/gpu: must equal the limit for an extended "
                                      "resource"]  # fmt: skip


def test_predictor_spec_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="runtime 'tgi': choose one of triton, predictor"):
        InferenceServiceSpec(name="d", storage_uri="s3://b/p", runtime="tgi")
    with pytest.raises(ValueError, match="runtime predictor needs the image that runs `asymvae serve`"):
        InferenceServiceSpec(name="d", storage_uri="s3://b/p", runtime="predictor")
    with pytest.raises(ValueError, match="model name 'a/b'"):
        InferenceServiceSpec(name="d", storage_uri="s3://b/p", runtime="predictor", image=IMAGE, model_name="a/b")
    with pytest.raises(DeploymentError, match="runtime 'tgi': choose one of triton, predictor"):
        DeployStepConfig(runtime="tgi")
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    with pytest.raises(DeploymentError, match=f"runtime=predictor needs the image .* set `image` \\(or {IMAGE_ENV}"):
        deploy_step(DeployStepConfig(runtime="predictor"), "unused", STORE_HF)


@pytest.fixture(scope="module")
def predictor(diffusers_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """What the predictor's pod runs: `asymvae serve` (KServe's model server) on the diffusers export."""
    with asymvae_serve(
        diffusers_export_dir, tmp_path_factory.mktemp("predictor") / "server.log", "--grpc-port", "0"
    ) as s:
        yield s


def test_the_predictor_deploys_on_the_steps_own_image_and_answers_the_check(
    diffusers_export_dir: Path, predictor: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime=predictor: the custom predictor on the step's own image (ASYMVAE_IMAGE, which the pipeline sets),
    the diffusers export as its STORAGE_URI, and the check's tensors from the served model's own metadata."""
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    monkeypatch.setenv(IMAGE_ENV, IMAGE)
    server = _cluster()
    with server as fake:
        fake.isvc_url = predictor
        cfg = DeployStepConfig(runtime="predictor", gate="off", gpus=1, poll_s=0.01)
        done = deploy_step(cfg, str(diffusers_export_dir), STORE_HF, server.api_client())
        image = "registry.example.com/asymvae:0.2.0"
        other = DeployStepConfig(runtime="predictor", gate="off", image=image, poll_s=0.01)
        again = deploy_step(other, str(diffusers_export_dir), STORE_HF, server.api_client())
    assert not fake.refused and not fake.pruned
    assert (done.action, again.action) == ("created", "updated")
    assert storage_uri(done.manifest) == STORE_HF
    created = fake.calls("POST", f"/namespaces/{NS}/inferenceservices")[0].body["spec"]["predictor"]
    (container,) = created["containers"]
    assert container["image"] == IMAGE and {"name": "STORAGE_URI", "value": STORE_HF} in container["env"]
    assert created["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    updated = fake.calls("PUT", f"/namespaces/{NS}/inferenceservices/asymvae-decoder")[0].body["spec"]["predictor"]
    assert updated["containers"][0]["image"] == "registry.example.com/asymvae:0.2.0"
    assert done.url == predictor and done.model == "asymvae_decoder"
    assert done.check.output_shape == [1, 3, 64, 64] and done.check.input_shapes["latent"] == [1, 4, 8, 8]


def test_the_component_serves_the_diffusers_export_with_the_predictor(
    repository: Path, diffusers_export_dir: Path, predictor: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    server = _cluster()
    triton = _Downloaded(name="exported", uri="minio://" + STORE.removeprefix("s3://"))
    triton.local = str(repository)
    hf = _Downloaded(name="exported", uri="minio://" + STORE_HF.removeprefix("s3://"))
    hf.local = str(diffusers_export_dir)
    with server as fake:
        fake.isvc_url = predictor
        fake.rollout_reads = 0  # rolled out by the first read: the component polls every 10 s
        with pytest.raises(DeploymentError, match="runtime=predictor serves the diffusers export, and no `diffusers`"):
            deploy.python_func(
                exported=triton, manifest=Artifact(name="m", uri=str(tmp_path / "m")),
                verdict=Markdown(name="v", uri=str(tmp_path / "v")), runtime="predictor", gate="off",
            )  # fmt: skip
        manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
        _use_kubeconfig(server, tmp_path, monkeypatch)
        verdict = Markdown(name="verdict", uri=str(tmp_path / "verdict"))
        action = deploy.python_func(exported=triton, diffusers=hf, manifest=manifest, verdict=verdict,
                                    runtime="predictor", image=IMAGE, gpus=0, gate="off")  # fmt: skip
    assert action == "created" and not fake.refused
    written = yaml.safe_load((tmp_path / "manifest").read_text())
    assert written["spec"]["predictor"]["containers"][0]["env"][0] == {"name": "STORAGE_URI", "value": STORE_HF}
    assert manifest.metadata["runtime"] == "predictor" and manifest.metadata["storage_uri"] == STORE_HF
    assert manifest.metadata["model"] == "asymvae_decoder" and manifest.metadata["output_shape"] == [1, 3, 64, 64]
