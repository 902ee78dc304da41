"""A `TrainingJobSpec` as a training-operator v1 `kubeflow.org/v1` PyTorchJob (pure builder).

Master (1 replica) + Worker (nodes - 1); every pod runs one container named `pytorch` (the operator
requires that name) with `asymvae train CONFIG ...`, with the environment, resources, volumes and
scheduling of asymvae.cluster.jobspec.
"""

from __future__ import annotations

from typing import Any

from asymvae.cluster.jobspec import (
    TrainingJobSpec,
    container_env,
    container_resources,
    job_labels,
    job_metadata,
    scheduling,
    train_args,
    volumes_and_mounts,
)
from asymvae.kube import NO_ISTIO

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER_NAME = "pytorch"
"""The PyTorchJob operator only recognises the training container by this name."""
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"


def _container(spec: TrainingJobSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["asymvae", *train_args(spec)],
        "env": container_env(spec),
    }
    resources = container_resources(spec)
    if resources:
        container["resources"] = resources
    _, mounts = volumes_and_mounts(spec)
    if mounts:
        container["volumeMounts"] = mounts
    if spec.metrics_port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"}]
    return container


def _pod_template(spec: TrainingJobSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [_container(spec)], **scheduling(spec)}
    volumes, _ = volumes_and_mounts(spec)
    if volumes:
        pod["volumes"] = volumes
    return {"metadata": {"labels": job_labels(spec), "annotations": dict(NO_ISTIO)}, "spec": pod}


def build_pytorchjob(spec: TrainingJobSpec) -> dict[str, Any]:
    """The PyTorchJob manifest for `spec` (pure: no cluster access). The tests validate it against the CRD."""
    # Each replica gets its own template (no shared dicts: YAML would write anchors, edits would leak).
    replicas = {"Master": {"replicas": 1, "restartPolicy": spec.restart_policy, "template": _pod_template(spec)}}
    if spec.nodes > 1:
        replicas["Worker"] = {
            "replicas": spec.nodes - 1,
            "restartPolicy": spec.restart_policy,
            "template": _pod_template(spec),
        }
    run_policy: dict[str, Any] = {"cleanPodPolicy": spec.clean_pod_policy, "backoffLimit": spec.backoff_limit}
    if spec.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = spec.active_deadline_seconds
    job_spec = {
        "nprocPerNode": str(spec.processes_per_node),
        "runPolicy": run_policy,
        "pytorchReplicaSpecs": replicas,
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": job_metadata(spec, job_spec), "spec": job_spec}
