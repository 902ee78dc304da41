"""The train step with a cluster launcher against the stand-in Kubernetes API, acting as the run's service
account: the job it submits (in the step's own namespace, owned by the step's pod; shards from the artifact
store, the PVC, the Secret, GPUs), the export it copies back from the PVC, and what it does when told to stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asymvae.cluster.errors import JobFailedError
from asymvae.cluster.pod import NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV
from asymvae.config import ConfigError
from asymvae.steps.train import TrainStepConfig, train_step
from tests.fake_kube import TOKEN, FakeKubeServer, status
from tests.k8s_rbac import run_role_rules

SHARDS = "s3://mlpipeline/v2/artifacts/asymvae/run-1/prepare/dataset/manifest.json"
NS = "kubeflow-user-example-com"
PLURALS = {"pytorchjob": "pytorchjobs", "trainjob": "trainjobs"}


@pytest.fixture
def in_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the compiled pipeline gives the step through the downward API."""
    monkeypatch.setenv(NAMESPACE_ENV, NS)
    monkeypatch.setenv(POD_NAME_ENV, "asymvae-train-pod")
    monkeypatch.setenv(POD_UID_ENV, "6f1c")


def _fields(runs: Path, base: Path, **changes) -> dict:
    fields = dict(
        config="demo",
        overrides=[f"model.pretrained={base / 'vae'}", "train.max_steps=2"],
        launcher="pytorchjob",
        image="reg.example/asymvae:1",
        nodes=2,
        gpus_per_node=4,
        runs_dir=str(runs),
        output_pvc="asymvae-runs",
        s3_endpoint="seaweedfs.kubeflow:9000",
        node_cpu="8",
        node_memory="64Gi",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H200"},
        timeout_s=5.0,
    )
    fields.update(changes)
    return fields


def _server() -> FakeKubeServer:
    """The stand-in as the profile's run account, with exactly the rights k8s/rbac's Role gives it."""
    return FakeKubeServer(service_account=(NS, "default-editor"), rbac_rules=run_role_rules())


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_submits_the_job_in_its_own_namespace_and_copies_the_export_from_the_pvc(
    tmp_path: Path, base_vae_dir: Path, asym_export_dir: Path, in_pod: None, launcher: str
) -> None:
    runs, job = tmp_path / "runs", "asymvae-train-abc"
    # What the job's pods leave on the shared volume when they finish.
    shutil.copytree(asym_export_dir, runs / job / "step2")
    done = "Succeeded" if launcher == "pytorchjob" else "Complete"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running", done)], log="trained\n")
        cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher=launcher))
        meta = train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
    assert not fake.refused
    (created,) = fake.calls("POST", f"/namespaces/{NS}/{PLURALS[launcher]}")
    obj = created.body
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "asymvae-train-pod", "uid": "6f1c"}
    ]
    if launcher == "pytorchjob":
        assert set(obj["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"} and obj["spec"]["nprocPerNode"] == "4"
        pod = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        (container,) = pod["containers"]
        cmd, env, resources = container["command"], container["env"], container["resources"]
    else:
        trainer = obj["spec"]["trainer"]
        assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
        patch = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        pod = patch["template"]["spec"]["template"]["spec"]
        cmd, env, resources = trainer["command"], trainer["env"], trainer["resourcesPerNode"]
    assert cmd[:3] == ["asymvae", "train", "demo"]
    assert f"data.shards={SHARDS}" in cmd and cmd[cmd.index("--output") + 1] == str(runs / job)
    assert resources == {"limits": {"nvidia.com/gpu": 4, "cpu": "8", "memory": "64Gi"},
                         "requests": {"cpu": "8", "memory": "64Gi"}}  # fmt: skip
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "asymvae-runs"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert secret_env["AWS_ACCESS_KEY_ID"] == {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    assert meta["launcher"] == launcher and meta["steps"] == 2 and meta["baseline"] == "baseline"


def test_a_failed_job_fails_the_step_with_its_reason(tmp_path: Path, base_vae_dir: Path, in_pod: None) -> None:
    server = _server()
    with server as fake:
        fake.script("asymvae-train-bad", [status("Created", "Failed", reason="OOMKilled", message="out of memory")])
        with pytest.raises(JobFailedError, match="OOMKilled"):
            cfg = TrainStepConfig(**_fields(tmp_path / "runs", base_vae_dir))
            train_step(cfg, SHARDS, str(tmp_path / "model"), "asymvae-train-bad", server.api_client())
    assert not (tmp_path / "model").exists()  # nothing that looks like a model


def test_a_pvc_hand_over_across_namespaces_is_refused(tmp_path: Path, base_vae_dir: Path, in_pod: None) -> None:
    """A job in another namespace would mount another volume of the same claim name: the step would never
    see its export. Refused before anything is created."""
    cfg = TrainStepConfig(**_fields(tmp_path / "runs", base_vae_dir, namespace="asymvae"))
    with pytest.raises(ConfigError, match="different volume"):
        train_step(cfg, SHARDS, str(tmp_path / "model"), "asymvae-train-x", api_client=None)


def test_without_a_pod_or_a_namespace_the_step_says_what_to_pass(
    tmp_path: Path, base_vae_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NAMESPACE_ENV, raising=False)
    cfg = TrainStepConfig(**_fields(tmp_path / "runs", base_vae_dir, output_pvc=""))
    with pytest.raises(ConfigError, match="no namespace given"):
        train_step(cfg, SHARDS, str(tmp_path / "model"), "asymvae-train-x", api_client=None)


_STEP = """
import json, os, sys
from kubernetes import client
from asymvae.steps.train import TrainStepConfig, train_step
cfg = client.Configuration(host=os.environ["FAKE_KUBE"])
cfg.api_key, cfg.api_key_prefix = {"authorization": os.environ["FAKE_TOKEN"]}, {"authorization": "Bearer"}
train_step(TrainStepConfig(**json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4], client.ApiClient(cfg))
"""


def test_sigterm_deletes_the_running_job(tmp_path: Path, base_vae_dir: Path) -> None:
    """Kubernetes (and Argo, when a KFP run is terminated) stops the step's pod with SIGTERM: the step deletes
    its job before exiting, so the job does not hold its GPUs until the deadline."""
    job = "asymvae-train-stop"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running")])
        env = {**os.environ, "FAKE_KUBE": fake.url, "FAKE_TOKEN": TOKEN, NAMESPACE_ENV: NS,
               POD_NAME_ENV: "asymvae-train-pod", POD_UID_ENV: "6f1c"}  # fmt: skip
        fields = _fields(tmp_path / "runs", base_vae_dir, timeout_s=600.0)
        args = [json.dumps(fields), SHARDS, str(tmp_path / "model"), job]
        step = subprocess.Popen([sys.executable, "-c", _STEP, *args], env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not fake.calls("GET", f"/pytorchjobs/{job}") and time.monotonic() < deadline:
                assert step.poll() is None, step.stderr.read()
                time.sleep(0.1)
            assert fake.jobs, "the step never created its job"
            step.send_signal(signal.SIGTERM)
            _, err = step.communicate(timeout=60)
        finally:
            if step.poll() is None:
                step.kill()
        assert step.returncode != 0 and "JobInterrupted" in err
        assert len(fake.calls("DELETE", f"/namespaces/{NS}/pytorchjobs/{job}")) == 1
        assert not fake.jobs
