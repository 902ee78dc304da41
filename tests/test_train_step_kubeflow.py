"""The train step with launcher=kubeflow against the stand-in Kubernetes API: the PyTorchJob it submits
(shards from the artifact store, the PVC, the Secret, GPUs), and the export it copies back from the PVC."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asymvae.cluster.errors import JobFailedError
from asymvae.steps.train import TrainStepConfig, train_step
from tests.fake_kube import FakeKubeServer, status
from tests.k8s_schemas import PYTORCHJOB_CRD

SHARDS = "s3://mlpipeline/v2/artifacts/asymvae/run-1/prepare/dataset/manifest.json"


def _cfg(runs: Path, base: Path, **changes) -> TrainStepConfig:
    fields = dict(
        config="demo",
        overrides=[f"model.pretrained={base / 'vae'}", "train.max_steps=2"],
        launcher="kubeflow",
        image="reg.example/asymvae:1",
        nodes=2,
        gpus_per_node=4,
        runs_dir=str(runs),
        output_pvc="asymvae-runs",
        s3_endpoint="minio-service.kubeflow:9000",
        timeout_s=5.0,
    )
    fields.update(changes)
    return TrainStepConfig(**fields)


def test_submits_the_job_and_copies_the_export_from_the_pvc(
    tmp_path: Path, base_vae_dir: Path, asym_export_dir: Path
) -> None:
    runs, job = tmp_path / "runs", "asymvae-train-abc"
    # What the job's pods leave on the shared volume when they finish.
    shutil.copytree(asym_export_dir, runs / job / "step2")
    server = FakeKubeServer(PYTORCHJOB_CRD)
    with server as fake:
        fake.script(job, [status("Created", "Running", "Succeeded")], log="trained\n")
        meta = train_step(_cfg(runs, base_vae_dir), SHARDS, str(tmp_path / "model"), job, server.api_client())
    (created,) = fake.calls("POST", "/pytorchjobs")
    obj = created.body
    assert set(obj["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"} and obj["spec"]["nprocPerNode"] == "4"
    pod = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (container,) = pod["containers"]
    cmd = container["command"]
    assert cmd[:3] == ["asymvae", "train", "demo"]
    assert f"data.shards={SHARDS}" in cmd and cmd[cmd.index("--output") + 1] == str(runs / job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "asymvae-runs"}} in pod["volumes"]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secret_env["AWS_ACCESS_KEY_ID"] == {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    assert meta["launcher"] == "kubeflow" and meta["steps"] == 2 and meta["baseline"] == "baseline"


def test_a_failed_job_fails_the_step_with_its_reason(tmp_path: Path, base_vae_dir: Path) -> None:
    server = FakeKubeServer(PYTORCHJOB_CRD)
    with server as fake:
        fake.script("asymvae-train-bad", [status("Created", "Failed", reason="OOMKilled", message="out of memory")])
        with pytest.raises(JobFailedError, match="OOMKilled"):
            train_step(
                _cfg(tmp_path / "runs", base_vae_dir),
                SHARDS,
                str(tmp_path / "model"),
                "asymvae-train-bad",
                server.api_client(),
            )
    assert not (tmp_path / "model").exists()  # nothing that looks like a model
