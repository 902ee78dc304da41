"""Scheduled retraining never ships a worse decoder: pipeline runs in a row through the deploy step, each with its
Triton export (and its evaluation.json) in the real S3 server, against the stand-in Kubernetes API with KServe's
behaviour (tests/support/fake_kube.py). Run 1 beats the baseline and is deployed; run 2 scores worse on the same
held-out evaluation and is kept out, the step (and the component) succeeding with the InferenceService still on
run 1; run 3 beats run 1 and replaces it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import yaml
from kfp.dsl import Artifact, Markdown, Model

from asymvae.cluster.pod import NAMESPACE_ENV
from asymvae.evaluation.report import write_report
from asymvae.export.config import ExportConfig
from asymvae.export.run import export_model
from asymvae.serving.inferenceservice import InferenceServiceSpec, build_inferenceservice, read_inferenceservice
from asymvae.steps.deploy import DeployStepConfig, deploy_step
from asymvae.storage.factory import open_store
from asymvae_components.deploy.component import deploy
from tests.support.fake_kube import FakeKubeServer, condition
from tests.support.k8s_rbac import kubeflow_role_rules
from tests.support.tritonserver import TritonServer

NS = "kubeflow-user-example-com"
NAME = "asymvae-decoder"
BASELINE_PRE_ERROR = 0.004
SCORES = {1: 0.003, 2: 0.0035, 3: 0.002}
"""Each run's masked asymmetric pre_error on the same held-out evaluation (the baseline VAE's: 0.004)."""


def _uri(run: int) -> str:
    return f"s3://asymvae/private-artifacts/{NS}/v2/artifacts/asymvae/run-{run}/export-2/exported"


def _metrics(folder: Path, pre_error: float) -> Path:
    """A metrics.json as `asymvae eval` writes it (its report writer), with the given score."""
    summary = {
        "masked": {"baseline": {"pre_error": BASELINE_PRE_ERROR}, "asymmetric": {"pre_error": pre_error}},
        "full_mask": {"baseline": {"psnr": 20.0}, "asymmetric": {"psnr": 21.0}},
        "data": "s3://asymvae/datasets/eval",
        "split": "val",
        "images": 64,
        "resolution": 64,
        "mask_seed": 1,
        "mean_hole_share": 0.3,
        "latents": "baseline encoder, posterior mode",
        "decoding": "whole images",
        "pre_error_ratio": pre_error / BASELINE_PRE_ERROR,
    }
    return write_report(folder, summary, [], [])["json"]


@pytest.fixture(scope="module")
def runs(asym_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Each run's Triton export (the repository root), exported with its evaluation."""
    out = {}
    for run, score in SCORES.items():
        root = tmp_path_factory.mktemp(f"run{run}")
        metrics = _metrics(root / "eval", score)
        export_model(ExportConfig(str(asym_export_dir), "triton", str(root / "exported"), eval=str(metrics)))
        out[run] = root / "exported"
    return out


@pytest.fixture
def answering(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], AbstractContextManager[str]]:
    """What answers the check after a rollout: the real tritonserver serving a Triton repository (its URL;
    tests/support/tritonserver.py)."""
    return lambda repository: TritonServer(repository, tmp_path_factory.mktemp("tritonserver"))


@pytest.fixture
def uploaded(runs: dict[int, Path], s3_env) -> dict[int, str]:
    """Each run's export where KFP stores it: in the object store."""
    for run, repository in runs.items():
        store = open_store(_uri(run))
        for path in sorted(p for p in repository.rglob("*") if p.is_file()):
            store.put(path.relative_to(repository).as_posix(), path.read_bytes())
    return {run: _uri(run) for run in runs}


def _cluster() -> FakeKubeServer:
    return FakeKubeServer(service_account=(NS, "default-editor"), rbac_rules=kubeflow_role_rules("kubeflow-edit"))


def _storage_uri(server: FakeKubeServer) -> str:
    return read_inferenceservice(NAME, NS, server.api_client())["spec"]["predictor"]["model"]["storageUri"]


def test_better_then_worse_then_better_deploys_keeps_then_updates(
    runs: dict[int, Path],
    uploaded: dict[int, str],
    answering: Callable[[Path], AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    cfg = DeployStepConfig(name=NAME, poll_s=0.01)
    server = _cluster()
    with server as fake:
        fake.rollout_reads = 0
        with answering(runs[1]) as url:
            fake.isvc_url = url
            first = deploy_step(cfg, str(runs[1]), uploaded[1], server.api_client())
        # run 2, through the component as the pipeline runs it: no server needed, nothing applied
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(server.kubeconfig(NS)))
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
        exported = Model(name="exported", uri="minio://" + uploaded[2].removeprefix("s3://"))
        exported.custom_path = str(runs[2])  # where the launcher downloaded it
        manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
        verdict = Markdown(name="verdict", uri=str(tmp_path / "verdict"))
        second = deploy.python_func(exported=exported, manifest=manifest, verdict=verdict, name=NAME, gpus=0)
        writes_after_two = len(fake.calls("PUT")) + len(fake.calls("POST"))
        kept_on = _storage_uri(server)
        with answering(runs[3]) as url:
            fake.isvc_url = url
            third = deploy_step(cfg, str(runs[3]), uploaded[3], server.api_client())
        served_now = _storage_uri(server)
    assert not fake.refused
    assert first.action == "created" and "First deploy" in first.verdict.reason
    assert "0.7500 times the baseline VAE's 0.004, below first_deploy_max_ratio 1." in first.verdict.reason
    assert second == "kept" and kept_on == uploaded[1] and writes_after_two == 1  # run 1's create only
    page = (tmp_path / "verdict").read_text()
    assert page.startswith("# Deploy gate: Not deployed: the serving export was kept")
    assert "new 0.0035, serving 0.003 (-16.67% improvement" in page and f"(`{uploaded[1]}`) | 0.003 |" in page
    assert "deploy_gate=off" in page
    assert verdict.metadata["gate_deploy"] is False and manifest.metadata["action"] == "kept"
    assert (tmp_path / "manifest").read_text().startswith("# Not applied: the deploy gate kept")
    assert third.action == "updated" and served_now == uploaded[3] and third.check.output_shape == [1, 3, 64, 64]
    assert "new 0.002, serving 0.003 (+33.33% improvement" in third.verdict.reason


def test_a_serving_export_the_step_cannot_read_keeps_it_with_the_reason(
    runs: dict[int, Path], uploaded: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom predictor (its storage URI in STORAGE_URI) serving from a bucket the step's store does not hold,
    and one serving from a location that is not in the object store: no crash, no change, and the reason."""
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    elsewhere = "s3://another-teams-bucket/models/decoder"
    custom = build_inferenceservice(InferenceServiceSpec(name=NAME, storage_uri=uploaded[1], namespace=NS))
    custom["spec"]["predictor"]["containers"] = [
        {"name": "kserve-container", "image": "asymvae", "env": [{"name": "STORAGE_URI", "value": elsewhere}]}
    ]
    del custom["spec"]["predictor"]["model"]
    on_pvc = build_inferenceservice(InferenceServiceSpec(name=NAME, storage_uri="pvc://models/decoder", namespace=NS))
    for existing, why in ((custom, "another-teams-bucket"), (on_pvc, "not in an object store the step reads")):
        server = _cluster()
        with server as fake:
            fake.add_existing(existing, [{"conditions": [condition("Ready", "Ready")]}])
            done = deploy_step(DeployStepConfig(name=NAME, poll_s=0.01), str(runs[3]), uploaded[3], server.api_client())
            assert done.action == "kept" and not fake.calls("PUT")
        assert why in done.verdict.reason and "has no readable evaluation.json" in done.verdict.reason
