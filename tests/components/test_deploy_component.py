"""The deploy step: its InferenceService valid against KServe's real CRD and still valid once KServe merges the
`kserve-tritonserver` runtime into it; applied through the stand-in Kubernetes API as the run's account; and
checked with one real inference (onnxruntime behind the v2 protocol) at the address the service reports."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kfp.dsl import Artifact, Model

from asymvae.cluster.crd import schema_errors, validate_custom_object
from asymvae.cluster.errors import DeploymentError
from asymvae.cluster.inferenceservice import InferenceServiceSpec, build_inferenceservice
from asymvae.cluster.pod import NAMESPACE_ENV
from asymvae.export.config import ExportConfig
from asymvae.export.run import export_model
from asymvae.steps.deploy import DeployStepConfig, deploy_step
from asymvae_components.deploy.component import deploy
from tests.fake_kube import TOKEN, FakeKubeServer, condition
from tests.k8s_rbac import run_role_rules
from tests.k8s_schemas import INFERENCESERVICE_CRD
from tests.kserve_runtime import merged_pod_errors
from tests.v2_server import V2Server

NS = "kubeflow-user-example-com"
STORE = "s3://mlpipeline/private-artifacts/kubeflow-user-example-com/v2/artifacts/asymvae/run-1/export-2/exported"


@pytest.mark.parametrize("gpus", [0, 1])
def test_inferenceservice_matches_the_crd_and_survives_kserves_runtime_merge(gpus: int) -> None:
    obj = build_inferenceservice(
        InferenceServiceSpec(name="asymvae-decoder", storage_uri="s3://mlpipeline/v2/artifacts/x/exported", gpus=gpus)
    )
    validate_custom_object(obj, INFERENCESERVICE_CRD)
    assert merged_pod_errors(obj) == []
    model = obj["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://mlpipeline/v2/artifacts/x/exported"
    assert ("nvidia.com/gpu" in model["resources"]["limits"]) == bool(gpus)
    assert obj["spec"]["predictor"]["serviceAccountName"] == "asymvae-serving"


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


# -- the step, against the stand-ins ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(asym_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy") / "exported"
    export_model(ExportConfig(str(asym_export_dir), "triton", str(root), name="asymvae_decoder"))
    return root


def _cluster() -> FakeKubeServer:
    return FakeKubeServer(service_account=(NS, "default-editor"), rbac_rules=run_role_rules())


def test_deploys_in_its_namespace_waits_for_ready_and_checks_an_inference(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    server = _cluster()
    with server as fake, V2Server(repository) as served:
        fake.isvc_url = served
        cfg = DeployStepConfig(gpus=1, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"}, poll_s=0.01)
        done = deploy_step(cfg, str(repository), STORE, server.api_client())
        again = deploy_step(cfg, str(repository), STORE, server.api_client())
    assert not fake.refused
    assert (done.action, again.action) == ("created", "updated")
    created = fake.calls("POST", f"/namespaces/{NS}/inferenceservices")[0]  # the second POST got a 409
    assert len(fake.calls("PUT", f"/namespaces/{NS}/inferenceservices/asymvae-decoder")) == 1
    predictor = created.body["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert done.url == served and done.model == "asymvae_decoder"
    assert done.check.output_shape == [1, 3, 64, 64]


def test_a_service_that_never_becomes_ready_fails_the_step_with_kserves_reason(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    stuck = {"conditions": [condition("Ready", "RevisionMissing", "Configuration is waiting for a Revision", "False")]}
    server = _cluster()
    with server as fake:
        fake.script("asymvae-decoder", [stuck])
        cfg = DeployStepConfig(ready_timeout_s=0.2, poll_s=0.01)
        with pytest.raises(DeploymentError, match="not Ready within 0.2 s: Ready: RevisionMissing Configuration is"):
            deploy_step(cfg, str(repository), STORE, server.api_client())


class _Downloaded(Model):
    """A Model artifact in the store whose copy the launcher put at `local` (on a cluster: under /minio/...)."""

    local = ""

    @property
    def path(self) -> str:
        return self.local


def test_the_component_deploys_through_the_kubeconfig_and_records_the_check(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _cluster()
    with server as fake, V2Server(repository) as served:
        fake.isvc_url = served
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
            "users": [{"name": "run", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "run", "namespace": NS}}],
            "current-context": "fake",
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        # the kubernetes client read $KUBECONFIG when it was imported: point its default there
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
        monkeypatch.setenv(NAMESPACE_ENV, NS)
        exported = _Downloaded(name="exported", uri="minio://" + STORE.removeprefix("s3://"))
        exported.local = str(repository)
        manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
        action = deploy.python_func(exported=exported, manifest=manifest, gpus=0, ready_timeout_s=5.0)
    assert action == "created" and not fake.refused
    written = yaml.safe_load((tmp_path / "manifest").read_text())
    assert written["spec"]["predictor"]["model"]["storageUri"] == STORE
    assert manifest.metadata["url"] == served and manifest.metadata["model"] == "asymvae_decoder"
    assert manifest.metadata["output_shape"] == [1, 3, 64, 64]
