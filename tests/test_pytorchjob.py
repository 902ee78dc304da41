"""The PyTorchJob builder (pure) against the real CRD schema, and the local launcher's command."""

from __future__ import annotations

import copy
import sys

import pytest

from asymvae.cluster.jobspec import Toleration, TrainingJobSpec, spec_hash, train_args
from asymvae.cluster.local import local_launch
from asymvae.cluster.pytorchjob import build_pytorchjob
from asymvae.training.launch import torchrun_command
from tests.support.crd import CRDValidationError, schema_errors, validate_custom_object
from tests.support.k8s_schemas import PYTORCHJOB_CRD


def full_spec(**changes) -> TrainingJobSpec:
    values = dict(
        name="sd15-x15",
        namespace="team-a",
        image="registry.example.com/asymvae:0.1.0",
        config="asymmetric_autoencoderkl_sdv15_pokemon",
        overrides=["train.max_steps=2000", "train.batch_size=8"],
        nodes=3,
        gpus_per_node=8,
        shards_uri="s3://datasets/pokemon/shards",
        output_uri="/mnt/output/sd15-x15",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[Toleration("nvidia.com/gpu"), Toleration("pool", "Equal", "training", "NoExecute")],
        shm_size="32Gi",
        credentials_secret="mlpipeline-minio-artifact",
        s3_endpoint="minio-service.kubeflow:9000",
        env={"HF_HOME": "/cache/hf"},
        cpu="32",
        memory="256Gi",
        service_account="asymvae-pipeline",
        output_pvc="asymvae-runs",
        active_deadline_seconds=86400,
    )
    values.update(changes)
    return TrainingJobSpec(**values)


def pod(job: dict, replica: str = "Master") -> dict:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]


def test_master_and_workers_run_asymvae_train_in_the_pytorch_container():
    job = build_pytorchjob(full_spec())
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "8"
    for replica in ("Master", "Worker"):
        (container,) = pod(job, replica)["containers"]
        assert container["name"] == "pytorch"
        assert container["command"] == [
            "asymvae", "train", "asymmetric_autoencoderkl_sdv15_pokemon",
            "--train.max-steps=2000", "--train.batch-size=8",
            "--data.shards=s3://datasets/pokemon/shards",
            "--resume", "--output", "/mnt/output/sd15-x15",
        ]  # fmt: skip
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_scheduling_shm_credentials_and_run_policy():
    job = build_pytorchjob(full_spec())
    spec = pod(job)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "pool", "operator": "Equal", "value": "training", "effect": "NoExecute"},
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "asymvae-runs"}
    container = spec["containers"][0]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlpipeline-minio-artifact",
        "key": "secretkey",
    }
    assert "value" not in env["AWS_ACCESS_KEY_ID"]  # a reference to the Secret, never the key itself
    assert env["S3_ENDPOINT"]["value"] == "minio-service.kubeflow:9000" and env["S3_USE_HTTPS"]["value"] == "0"
    assert env["ASYMVAE_METRICS_PORT"]["value"] == "9090" and env["HF_HOME"]["value"] == "/cache/hf"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert spec["serviceAccountName"] == "asymvae-pipeline"
    assert job["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 7 * 24 * 3600,
        "activeDeadlineSeconds": 86400,
    }


def test_single_node_cpu_job_has_no_workers_and_no_gpu_limit():
    job = build_pytorchjob(TrainingJobSpec(name="demo", image="asymvae:0.1.0", gpus_per_node=0, tolerations=[]))
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["nprocPerNode"] == "1"
    container = pod(job)["containers"][0]
    assert "resources" not in container and "tolerations" not in pod(job)
    assert container["command"] == ["asymvae", "train", "demo", "--resume"]


def test_the_builder_is_pure_and_the_spec_hash_follows_the_spec():
    spec = full_spec()
    assert build_pytorchjob(spec) == build_pytorchjob(spec)
    a = build_pytorchjob(spec)["metadata"]["annotations"]["asymvae/spec-hash"]
    b = build_pytorchjob(full_spec(overrides=["train.max_steps=10"]))["metadata"]["annotations"]["asymvae/spec-hash"]
    assert a != b
    job = build_pytorchjob(spec)
    assert a == spec_hash(job["spec"])


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"name": "Bad_Name"}, "job name"),
        ({"name": "x" * 60}, "at most"),
        ({"nodes": 0}, "nodes"),
        ({"restart_policy": "Sometimes"}, "restart_policy"),
        ({"overrides": ["train.max_steps"]}, "KEY=VALUE"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "takes no value"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(changes, match):
    with pytest.raises(ValueError, match=match):
        full_spec(**changes)


@pytest.mark.parametrize("nodes, gpus", [(1, 0), (1, 1), (4, 8)])
def test_built_jobs_match_the_real_crd_schema(nodes, gpus):
    validate_custom_object(build_pytorchjob(full_spec(nodes=nodes, gpus_per_node=gpus)), PYTORCHJOB_CRD)


@pytest.mark.parametrize(
    "where, typo",
    [
        (lambda j: j["spec"], "nprocPerNodes"),
        (lambda j: j["spec"]["runPolicy"], "cleanPodPolicyy"),
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"], "nodeSelecter"),
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0], "volumeMount"),
    ],
)
def test_a_misspelt_field_fails_the_closed_schema(where, typo):
    job = build_pytorchjob(full_spec())
    where(job)[typo] = "x"
    errors = schema_errors(job, PYTORCHJOB_CRD)
    assert len(errors) == 1 and typo in errors[0], errors
    with pytest.raises(CRDValidationError, match=typo):
        validate_custom_object(job, PYTORCHJOB_CRD)


def test_wrong_types_and_missing_required_fields_fail():
    job = build_pytorchjob(full_spec())
    bad = copy.deepcopy(job)
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    assert any("replicas" in e for e in schema_errors(bad, PYTORCHJOB_CRD))
    bad = copy.deepcopy(job)
    del pod(bad)["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in schema_errors(bad, PYTORCHJOB_CRD))
    bad = copy.deepcopy(job)
    bad["apiVersion"] = "kubeflow.org/v2"
    assert schema_errors(bad, PYTORCHJOB_CRD)


@pytest.mark.integration  # torchrun in a subprocess
def test_local_launcher_runs_the_same_command_with_nproc_per_node():
    spec = full_spec(gpus_per_node=2)
    launch = local_launch(spec)
    assert launch.argv == [sys.executable, "-m", "asymvae", *train_args(spec)]
    assert launch.env["NPROC_PER_NODE"] == "2"
    assert launch.env["S3_ENDPOINT"] == "minio-service.kubeflow:9000"
    # The CLI turns that environment into a torchrun re-execution on one node.
    cmd = torchrun_command(launch.argv[3:], env=launch.env)
    assert cmd[cmd.index("--standalone") + 1] == "--nproc_per_node=2"
    assert cmd[-len(launch.argv) + 3 :] == launch.argv[3:]


def test_replicas_share_no_objects_so_the_yaml_has_no_anchors():
    import yaml

    text = yaml.safe_dump(build_pytorchjob(full_spec()))
    assert "&id" not in text and "*id" not in text


def test_local_launcher_trains_a_tiny_run_in_place(base_vae_dir, tmp_path):
    from asymvae.cluster.submit import run_training
    from asymvae.config import save_yaml
    from tests.support.tiny_models import tiny_config

    config = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(base_vae_dir, tmp_path / "unused"), config)
    spec = TrainingJobSpec(
        name="tiny",
        image="unused-locally",
        config=str(config),
        overrides=["train.max_steps=2", "train.checkpoint_every=2"],
        gpus_per_node=0,
        output_uri=str(tmp_path / "out"),
        metrics_port=None,
    )
    out = run_training(spec, launcher="local")
    assert out["launcher"] == "local"
    assert (tmp_path / "out" / "step2" / "vae" / "config.json").is_file()
    assert (tmp_path / "out" / "checkpoints" / "step-00000002" / "COMPLETE").is_file()
    assert not (tmp_path / "unused").exists()  # --output from the spec won over the config's output_dir


@pytest.mark.integration  # torchrun in a subprocess
def test_local_launcher_reports_a_failed_run(tmp_path):
    from asymvae.cluster.errors import JobFailedError
    from asymvae.cluster.submit import run_training

    spec = TrainingJobSpec(name="bad", image="x", config=str(tmp_path / "missing.yaml"), gpus_per_node=0)
    with pytest.raises(JobFailedError, match="exited with status 2") as info:
        run_training(spec, launcher="local")
    assert info.value.reason == "ExitCode2"
