"""The Trainer v2 TrainJob builder (pure) against Trainer v2.3's CRD and the webhook rules the CRD lacks: the
same run as the PyTorchJob, with the same guarantees (resources, scheduling, /dev/shm, PVC, Secret
references, owner); and its Trainer v2.1 form (`podTemplateOverrides`, what Kubeflow 26.03 installs) against
v2.1.0's CRD, carrying the same pod template under the same spec hash."""

from __future__ import annotations

import copy

import pytest

from asymvae.cluster.jobspec import OwnerPod, Toleration, TrainingJobSpec
from asymvae.cluster.pytorchjob import build_pytorchjob
from asymvae.cluster.trainjob import POD_TEMPLATE_OVERRIDES, RUNTIME_PATCHES, build_trainjob, in_form
from tests.support.crd import schema_errors, validate_custom_object
from tests.support.fake_kube import trainjob_webhook_errors
from tests.support.k8s_schemas import TRAINJOB_CRD, TRAINJOB_V21_CRD


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


# -- Trainer v2.1's form: podTemplateOverrides ---------------------------------------------------------------


def v21_spec(**changes) -> TrainingJobSpec:
    """full_spec without the deadline, which Trainer v2.1's TrainJob cannot carry."""
    return full_spec(active_deadline_seconds=None, **changes)


def override(job: dict) -> dict:
    (entry,) = job["spec"]["podTemplateOverrides"]
    assert entry["targetJobs"] == [{"name": "node"}]
    return entry


@pytest.mark.parametrize("nodes, gpus, pvc", [(1, 0, None), (2, 8, "asymvae-runs")])
def test_the_v2_1_form_matches_trainer_v2_1_0s_crd_and_webhook_rules(nodes, gpus, pvc):
    job = build_trainjob(v21_spec(nodes=nodes, gpus_per_node=gpus, output_pvc=pvc), POD_TEMPLATE_OVERRIDES)
    validate_custom_object(job, TRAINJOB_V21_CRD)
    assert trainjob_webhook_errors(job) == []
    assert "runtimePatches" not in job["spec"]
    # each Trainer's CRD defines only its own form: the other one is an unknown field there
    assert any("podTemplateOverrides" in e for e in schema_errors(job, TRAINJOB_CRD))
    assert any("runtimePatches" in e for e in schema_errors(build_trainjob(v21_spec()), TRAINJOB_V21_CRD))


def test_both_forms_carry_the_same_pod_template_and_spec_hash():
    """/dev/shm, the runs volume and their mounts, node selector, tolerations, pod labels: whichever Trainer runs
    the job. The same spec hash lets a retried step adopt the job an earlier attempt created in either form."""
    v22, v21 = build_trainjob(v21_spec()), build_trainjob(v21_spec(), POD_TEMPLATE_OVERRIDES)
    entry = override(v21)
    assert {"metadata": entry["metadata"], "spec": entry["spec"]} == node_pod(v22)
    assert {"name": "dshm", "mountPath": "/dev/shm"} in entry["spec"]["containers"][0]["volumeMounts"]
    assert entry["spec"]["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert entry["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert v21["metadata"] == v22["metadata"]  # the spec hash included
    assert {k: v for k, v in v21["spec"].items() if k != "podTemplateOverrides"} == {
        k: v for k, v in v22["spec"].items() if k != "runtimePatches"
    }
    assert in_form(v22, POD_TEMPLATE_OVERRIDES) == v21 and in_form(v21, RUNTIME_PATCHES) == v22


def test_what_the_v2_1_form_cannot_carry_is_refused_not_dropped():
    with pytest.raises(ValueError, match="spec.activeDeadlineSeconds needs Trainer v2.2 or later"):
        build_trainjob(full_spec(), POD_TEMPLATE_OVERRIDES)
    job = build_trainjob(v21_spec())
    job["spec"]["runtimePatches"].append({"manager": "example.com/other", "trainingRuntimeSpec": {}})
    with pytest.raises(ValueError, match="holds more than a pod template of the 'node' job"):
        in_form(job, POD_TEMPLATE_OVERRIDES)
    with pytest.raises(ValueError, match="form must be one of"):
        build_trainjob(v21_spec(), "podSpecOverrides")


@pytest.mark.parametrize(
    "edit, rule",
    [
        (lambda e: e["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}]), "envs"),
        (lambda e: e["targetJobs"].append({"name": "launcher"}), "targetJob that doesn't exist"),
        (lambda e: e["spec"]["containers"].append({"name": "sidecar"}), "container that doesn't exist"),
    ],
)
def test_the_stand_in_applies_trainer_v2_1s_webhook_rules(edit, rule):
    """Trainer v2.1.0's webhook (jobset.go `Validate`) on podTemplateOverrides: what its CRD accepts."""
    job = copy.deepcopy(build_trainjob(v21_spec(), POD_TEMPLATE_OVERRIDES))
    edit(override(job))
    assert schema_errors(job, TRAINJOB_V21_CRD) == []
    assert any(rule in e for e in trainjob_webhook_errors(job))
