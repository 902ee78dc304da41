"""The Trainer v2 TrainJob builder (pure) against Trainer v2.3's CRD and the webhook rules the CRD lacks: the
same run as the PyTorchJob, with the same guarantees (resources, scheduling, /dev/shm, PVC, Secret
references, owner)."""

from __future__ import annotations

import copy

import pytest

from asymvae.cluster.crd import schema_errors, validate_custom_object
from asymvae.cluster.jobspec import OwnerPod, Toleration, TrainingJobSpec
from asymvae.cluster.pytorchjob import build_pytorchjob
from asymvae.cluster.trainjob import build_trainjob
from tests.fake_kube import trainjob_webhook_errors
from tests.k8s_schemas import TRAINJOB_CRD


def full_spec(**changes) -> TrainingJobSpec:
    values = dict(
        name="sd15-x15",
        namespace="team-a",
        image="registry.example.com/asymvae:0.1.0",
        config="asymmetric_autoencoderkl_sdv15_pokemon",
        overrides=["train.max_steps=2000"],
        nodes=2,
        gpus_per_node=8,
        shards_uri="s3://datasets/pokemon/shards",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[Toleration("nvidia.com/gpu"), Toleration("pool", "Equal", "training", "NoExecute")],
        credentials_secret="mlpipeline-minio-artifact",
        s3_endpoint="seaweedfs.kubeflow:9000",
        cpu="32",
        memory="256Gi",
        output_pvc="asymvae-runs",
        owner=OwnerPod("train-step-pod", "0e5f"),
        active_deadline_seconds=86400,
    )
    values.update(changes)
    return TrainingJobSpec(**values)


def node_pod(job: dict) -> dict:
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    return node["template"]["spec"]["template"]


@pytest.mark.parametrize("nodes, gpus, pvc", [(1, 0, None), (2, 8, "asymvae-runs")])
def test_built_trainjobs_match_the_crd_and_trainers_webhook_rules(nodes, gpus, pvc):
    job = build_trainjob(full_spec(nodes=nodes, gpus_per_node=gpus, output_pvc=pvc))
    validate_custom_object(job, TRAINJOB_CRD)
    assert trainjob_webhook_errors(job) == []


def test_the_trainjob_runs_what_the_pytorchjob_runs():
    spec = full_spec()
    job, v1 = build_trainjob(spec), build_pytorchjob(spec)
    master = v1["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    trainer = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    assert trainer["command"] == master["spec"]["containers"][0]["command"]
    assert trainer["env"] == master["spec"]["containers"][0]["env"]  # Secret references included
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"] == {
        "limits": {"nvidia.com/gpu": 8, "cpu": "32", "memory": "256Gi"},
        "requests": {"cpu": "32", "memory": "256Gi"},
    }
    pod = node_pod(job)
    assert pod["metadata"] == master["metadata"]  # labels (PodMonitor, run) and no Istio sidecar
    for key in ("nodeSelector", "tolerations", "volumes"):
        assert pod["spec"][key] == master["spec"][key]
    assert pod["spec"]["containers"] == [
        {"name": "node", "volumeMounts": master["spec"]["containers"][0]["volumeMounts"]}
    ]
    assert job["metadata"]["ownerReferences"] == v1["metadata"]["ownerReferences"]
    assert job["spec"]["activeDeadlineSeconds"] == 86400


def test_the_spec_hash_covers_the_trainjob_spec():
    a = build_trainjob(full_spec())["metadata"]["annotations"]["asymvae/spec-hash"]
    b = build_trainjob(full_spec(memory="128Gi"))["metadata"]["annotations"]["asymvae/spec-hash"]
    assert a != b
    # the owner is metadata, not spec: a retried step (a new pod) computes the same hash and adopts the job
    retried = build_trainjob(full_spec(owner=OwnerPod("retry", "1")))
    assert a == retried["metadata"]["annotations"]["asymvae/spec-hash"]


def test_torchrun_variables_are_refused_before_trainer_refuses_them():
    with pytest.raises(ValueError, match="PET_NNODES"):
        build_trainjob(full_spec(env={"PET_NNODES": "4"}))


@pytest.mark.parametrize(
    "edit, rule",
    [
        (lambda j: j["spec"]["runtimePatches"][0].update(manager="asymvae"), "domain-prefixed"),
        (lambda j: node_pod(j)["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}]), "envs"),
        (lambda j: j["spec"]["trainer"]["env"].append({"name": "PET_NODE_RANK", "value": "0"}), "reserved"),
    ],
)
def test_the_stand_in_applies_trainers_webhook_rules(edit, rule):
    """What the webhook refuses but the CRD accepts: a stand-in rule that can fail."""
    job = copy.deepcopy(build_trainjob(full_spec()))
    edit(job)
    assert schema_errors(job, TRAINJOB_CRD) == []
    assert any(rule in e for e in trainjob_webhook_errors(job))
