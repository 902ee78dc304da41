"""The train step with a cluster launcher against the stand-in Kubernetes API, acting as the run's service
account: the job it submits (in the step's own namespace, owned by the step's pod; shards from the artifact
store, the PVC, the Secret, GPUs), the export it copies back from the PVC, what it does when told to stop, and
what a retry of the step does: never a second training after the training itself failed, and the training
going on after an infrastructure fault."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asymvae.cluster.errors import (
    EarlierAttemptFailedError,
    JobFailedError,
    JobTimeoutError,
    JobVanishedError,
)
from asymvae.cluster.pod import NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV
from asymvae.cluster.trainjob import form_of, node_pod_template
from asymvae.cluster.verdict import VERDICT, recording_failure, refuse_after_failure
from asymvae.config import ConfigError
from asymvae.kube import KubernetesAPIError
from asymvae.steps.train import TrainStepConfig, train_step
from asymvae.training.mirror import RunMirror
from tests.support.crd import schema_errors
from tests.support.fake_kube import TOKEN, WITH_TRAINING_OPERATOR, FakeKubeServer, PodState, status
from tests.support.k8s_rbac import WITH_TRAINING_OPERATOR as OPERATOR_ROLES
from tests.support.k8s_rbac import kubeflow_role_rules

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


def _server(trainer: str = "v2.3") -> FakeKubeServer:
    """The stand-in as the profile's run account, with exactly the rights `kubeflow-edit` gives it (on a
    platform with the training operator too, for the PyTorchJob cases), serving `trainer`'s TrainJob."""
    rules = kubeflow_role_rules("kubeflow-edit", OPERATOR_ROLES)
    return FakeKubeServer(
        service_account=(NS, "default-editor"), rbac_rules=rules, served=WITH_TRAINING_OPERATOR, trainer=trainer
    )


@pytest.mark.parametrize("launcher, trainer", [("pytorchjob", "v2.3"), ("trainjob", "v2.3"), ("trainjob", "v2.1")])
def test_submits_the_job_in_its_own_namespace_and_copies_the_export_from_the_pvc(
    tmp_path: Path, base_vae_dir: Path, asym_export_dir: Path, in_pod: None, launcher: str, trainer: str
) -> None:
    """On Kubeflow 26.03's Trainer v2.1 the TrainJob is created in that Trainer's form (podTemplateOverrides),
    and what the API server keeps of it still has /dev/shm, the runs volume, the GPU toleration and the node
    selector."""
    runs, job = tmp_path / "runs", "asymvae-train-abc"
    # What the job's pods leave on the shared volume when they finish.
    shutil.copytree(asym_export_dir, runs / job / "step2")
    done = "Succeeded" if launcher == "pytorchjob" else "Complete"
    server = _server(trainer)
    with server as fake:
        fake.script(job, [status("Created", "Running", done)], log="trained\n")
        cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher=launcher))
        meta = train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
    assert not fake.refused and not fake.pruned and not fake.invalid_bodies
    (obj,) = fake.created  # what the API server stored
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "asymvae-train-pod", "uid": "6f1c"}
    ]
    if launcher == "pytorchjob":
        assert set(obj["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"} and obj["spec"]["nprocPerNode"] == "4"
        pod = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        (container,) = pod["containers"]
        cmd, env, resources = container["command"], container["env"], container["resources"]
    else:
        spec = obj["spec"]
        assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["numProcPerNode"] == 4
        assert form_of(obj) == {"v2.3": "runtimePatches", "v2.1": "podTemplateOverrides"}[trainer]
        assert schema_errors(obj, fake.crd("trainjobs")) == []
        pod = node_pod_template(obj)["spec"]
        cmd, env, resources = spec["trainer"]["command"], spec["trainer"]["env"], spec["trainer"]["resourcesPerNode"]
    assert cmd[:3] == ["asymvae", "train", "demo"]
    assert f"--data.shards={SHARDS}" in cmd and cmd[cmd.index("--output") + 1] == str(runs / job)
    assert resources == {"limits": {"nvidia.com/gpu": 4, "cpu": "8", "memory": "64Gi"},
                         "requests": {"cpu": "8", "memory": "64Gi"}}  # fmt: skip
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "asymvae-runs"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    mounts = next(c for c in pod["containers"] if c["name"] in ("node", "pytorch"))["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in mounts
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert secret_env["AWS_ACCESS_KEY_ID"] == {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    assert meta["launcher"] == launcher and meta["steps"] == 2 and meta["baseline"] == "baseline"


def test_without_a_runs_volume_the_job_mirrors_to_the_object_store_and_the_step_fetches_the_export(
    tmp_path: Path,
    base_vae_dir: Path,
    asym_export_dir: Path,
    in_pod: None,
    s3_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipeline's default: no PVC. The job's pods keep their run folder on their own disks and mirror it to
    the object store beside the model artifact; the step takes the export from there."""
    monkeypatch.chdir(tmp_path)  # the run folders are relative to the working folder, as in the pods
    job, run_store = "asymvae-train-novol", "s3://asymvae/v2/artifacts/asymvae/run-1/train/task-1"
    # What rank 0 leaves in the mirror when training ends (asymvae.training.mirror)
    shutil.copytree(asym_export_dir, tmp_path / "left" / "step2")
    mirror = RunMirror(f"{run_store}/run")
    mirror.claim()
    mirror.upload_export(tmp_path / "left" / "step2", 2)
    events = tmp_path / "left" / "logs" / "demo" / "events.out.tfevents.1.host"
    events.parent.mkdir(parents=True)
    events.write_bytes(b"event records")
    mirror.upload_logs(tmp_path / "left" / "logs")
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running", "Complete")])
        cfg = TrainStepConfig(**_fields(tmp_path / "unused", base_vae_dir, launcher="trainjob", output_pvc="",
                                        runs_dir=""))  # fmt: skip
        meta = train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client(), run_store=run_store)
    (created,) = fake.calls("POST", f"/namespaces/{NS}/trainjobs")
    cmd = created.body["spec"]["trainer"]["command"]
    assert f"--train.mirror={run_store}/run" in cmd and "--resume" in cmd
    assert cmd[cmd.index("--output") + 1] == f"work_dirs/pipeline/{job}"
    patch = created.body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    volumes = patch["template"]["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]  # schedules on any cluster
    assert (tmp_path / "model" / "vae" / "config.json").is_file() and meta["steps"] == 2
    # the TensorBoard logs come from the mirror too, into the model artifact the step's UI page points at
    assert (tmp_path / "model" / "tensorboard" / "demo" / events.name).read_bytes() == b"event records"
    assert meta["tensorboard"] == "tensorboard"


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
from asymvae.training.mirror import RunMirror
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
            _wait_for(fake, step, f"/pytorchjobs/{job}")
            step.send_signal(signal.SIGTERM)
            _, err = step.communicate(timeout=60)
        finally:
            if step.poll() is None:
                step.kill()
        assert step.returncode != 0 and "JobInterrupted" in err
        assert len(fake.calls("DELETE", f"/namespaces/{NS}/pytorchjobs/{job}")) == 1
        assert not fake.jobs
    assert not (tmp_path / "runs" / job / VERDICT).exists()  # a stopped step is no verdict on the training


def _wait_for(fake, step: subprocess.Popen, path_part: str) -> None:
    """Until the step (a subprocess) has created its job and read it once."""
    deadline = time.monotonic() + 120
    while not fake.calls("GET", path_part) and time.monotonic() < deadline:
        assert step.poll() is None, step.stderr.read()
        time.sleep(0.1)
    assert fake.jobs, "the step never created its job"


# -- retries: KFP retries the step whatever failed; only an infrastructure fault trains on --------------------


def _retry_stops_at_once(server: FakeKubeServer, cfg: TrainStepConfig, model: Path, job: str) -> str:
    """A retry of the step after its training failed: one line, and not one request to the cluster."""
    seen = len(server.state.requests)
    with pytest.raises(EarlierAttemptFailedError) as info:
        train_step(cfg, SHARDS, str(model), job, server.api_client())
    assert len(server.state.requests) == seen
    message = str(info.value)
    assert "\n" not in message and "A retry does not train again" in message and "start a new run" in message
    return message


def test_a_retry_after_the_restart_limit_starts_no_second_job(tmp_path: Path, base_vae_dir: Path, in_pod: None) -> None:
    """The runner deleted the OOM-looping job (its GPUs are free), so nothing on the cluster remembers it: the
    verdict in the run's folder does."""
    runs, job = tmp_path / "runs", "asymvae-train-oom"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running")], pods=[PodState(restarts=1, reason="OOMKilled", exit_code=137)])
        cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher="trainjob", max_restarts=1))
        with pytest.raises(JobFailedError, match="restarted 1 times") as first:
            train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
        assert first.value.reason == "TooManyRestarts" and not fake.jobs
        message = _retry_stops_at_once(server, cfg, tmp_path / "model", job)
    assert "OOMKilled (exit 137)" in message and str(runs / job / VERDICT) in message
    assert len(fake.calls("POST")) == 1
    assert json.loads((runs / job / VERDICT).read_text())["reason"] == "TooManyRestarts"


def test_a_retry_after_the_deadline_starts_no_second_job(tmp_path: Path, base_vae_dir: Path, in_pod: None) -> None:
    runs, job = tmp_path / "runs", "asymvae-train-slow"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running")])
        cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher="trainjob", timeout_s=0.5))
        with pytest.raises(JobTimeoutError, match="did not finish within 0.5 s"):
            train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
        assert not fake.jobs  # deleted at the deadline
        message = _retry_stops_at_once(server, cfg, tmp_path / "model", job)
    assert "did not finish within 0.5 s" in message and len(fake.calls("POST")) == 1


def test_a_job_that_failed_after_the_steps_pod_was_lost_is_reported_by_the_retry_and_never_rerun(
    tmp_path: Path, base_vae_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's pod is lost (SIGKILL: nothing cleans up), its job goes on and fails. The retry finds the
    failed job: it reports that failure, records it and creates nothing; the next retry stops at once."""
    runs, job = tmp_path / "runs", "asymvae-train-lost"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running"),
                          status("Created", "Running", "Failed", reason="FailedJobs", message="jobset failed")],
                    log="Traceback ...\nasymvae.data.sources.DataSourceError: no images in s3://x")  # fmt: skip
        fields = _fields(runs, base_vae_dir, launcher="trainjob", timeout_s=600.0)
        env = {**os.environ, "FAKE_KUBE": fake.url, "FAKE_TOKEN": TOKEN, NAMESPACE_ENV: NS,
               POD_NAME_ENV: "asymvae-train-pod", POD_UID_ENV: "6f1c"}  # fmt: skip
        args = [json.dumps(fields), SHARDS, str(tmp_path / "model"), job]
        step = subprocess.Popen([sys.executable, "-c", _STEP, *args], env=env, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(fake, step, f"/trainjobs/{job}")
        finally:
            step.kill()
            step.communicate(timeout=60)
        assert fake.jobs, "the lost pod's job runs on"

        for name, value in ((NAMESPACE_ENV, NS), (POD_NAME_ENV, "asymvae-train-pod-retry"), (POD_UID_ENV, "7a2d")):
            monkeypatch.setenv(name, value)
        cfg = TrainStepConfig(**fields)
        with pytest.raises(JobFailedError, match="failed before this attempt.*FailedJobs: jobset failed") as info:
            train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
        assert "DataSourceError: no images" in str(info.value)
        assert len(fake.calls("POST", "/trainjobs")) == 2 and len(fake.jobs) == 1  # the retry's create met a 409
        assert not fake.calls("DELETE") and not fake.calls("PATCH")  # kept for `kubectl describe`, not taken over
        message = _retry_stops_at_once(server, cfg, tmp_path / "model", job)
    assert "FailedJobs: jobset failed" in message
    assert json.loads((runs / job / VERDICT).read_text())["reason"] == "FailedJobs"


def test_after_an_unreachable_api_server_the_retry_trains(
    tmp_path: Path, base_vae_dir: Path, asym_export_dir: Path, in_pod: None
) -> None:
    """An infrastructure fault records nothing: the retry creates the job and trains (here the first attempt
    could not reach the API server at all: connection refused, as while it restarts)."""
    runs, job = tmp_path / "runs", "asymvae-train-flaky"
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    from kubernetes import client

    unreachable = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{closed}"))
    cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher="trainjob"))
    with pytest.raises(KubernetesAPIError, match="could not read the API discovery of trainer.kubeflow.org"):
        train_step(cfg, SHARDS, str(tmp_path / "model"), job, unreachable)
    assert not (runs / job / VERDICT).exists()

    shutil.copytree(asym_export_dir, runs / job / "step2")  # what the job's pods leave on the volume
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running"), status("Created", "Running", "Complete")])
        meta = train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
    assert meta["steps"] == 2 and (tmp_path / "model" / "vae" / "config.json").is_file()
    assert len(fake.calls("POST", "/trainjobs")) == 1


def test_a_job_that_vanished_is_no_verdict_so_the_retry_trains(
    tmp_path: Path, base_vae_dir: Path, asym_export_dir: Path, in_pod: None
) -> None:
    """A job deleted under the step (with its owner, when the pod it belonged to was deleted) says nothing about
    the training: the retry creates it again."""
    runs, job = tmp_path / "runs", "asymvae-train-gone"
    server = _server()
    with server as fake:
        fake.script(job, [status("Created", "Running")])

        def delete_after_the_first_read() -> None:
            deadline = time.monotonic() + 60
            while not fake.calls("GET", f"/trainjobs/{job}") and time.monotonic() < deadline:
                time.sleep(0.05)
            with fake.lock:
                fake.objects.clear()

        deleter = threading.Thread(target=delete_after_the_first_read)
        deleter.start()
        cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher="trainjob", timeout_s=1.0))
        with pytest.raises(JobVanishedError, match="disappeared while running"):
            train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())
        deleter.join()
        assert not (runs / job / VERDICT).exists()

        shutil.copytree(asym_export_dir, runs / job / "step2")
        fake.script(job, [status("Created", "Running", "Complete")])
        assert train_step(cfg, SHARDS, str(tmp_path / "model"), job, server.api_client())["steps"] == 2
    assert len(fake.calls("POST", "/trainjobs")) == 2


def test_a_retry_after_local_training_failed_does_not_train_again(tmp_path: Path, base_vae_dir: Path) -> None:
    """launcher=local holds the step's own GPUs: the same rule."""
    runs, job = tmp_path / "runs", "asymvae-train-local"
    cfg = TrainStepConfig(**_fields(runs, base_vae_dir, launcher="local", image="", nodes=1, gpus_per_node=0,
                                    output_pvc=""))  # fmt: skip
    missing = str(tmp_path / "no-dataset" / "manifest.json")
    with pytest.raises(JobFailedError, match="exited with status 2"):
        train_step(cfg, missing, str(tmp_path / "model"), job)
    with pytest.raises(EarlierAttemptFailedError, match="exited with status 2.*A retry does not train again"):
        train_step(cfg, missing, str(tmp_path / "model"), job)


def test_the_verdict_lives_in_an_object_store_as_well(s3_env) -> None:
    """`runs_dir` may be an `s3://` prefix: the verdict goes through asymvae.storage."""
    location = "s3://asymvae/runs/asymvae-train-s3"
    with pytest.raises(JobTimeoutError), recording_failure(location, "asymvae-train-s3"):
        raise JobTimeoutError("TrainJob ns/asymvae-train-s3 did not finish within 1 s (last state: Running)")
    where = re.escape(f"recorded in {location}/{VERDICT}")
    with pytest.raises(EarlierAttemptFailedError, match=rf"did not finish within 1 s .*{where}"):
        refuse_after_failure(location)


def test_a_file_of_that_name_asymvae_did_not_write_is_neither_obeyed_nor_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / VERDICT
    mine.write_text('{"my": "notes"}')
    refuse_after_failure(str(tmp_path))  # not a verdict: the step goes on
    with pytest.raises(JobFailedError), recording_failure(str(tmp_path), "job"):
        raise JobFailedError("TrainJob ns/job failed: Failed: boom", reason="Failed")
    assert mine.read_text() == '{"my": "notes"}'
