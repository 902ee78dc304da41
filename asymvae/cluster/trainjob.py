"""A `TrainingJobSpec` as a Kubeflow Trainer v2 `trainer.kubeflow.org/v1alpha1` TrainJob (pure builder).

The job runs on a ClusterTrainingRuntime (`torch-distributed` by default: one replicated job `node` whose
container is `node`), which Trainer turns into a JobSet. Through the TrainJob API as of Trainer v2.3:
`spec.trainer` carries the image, the command, `numNodes`, `numProcPerNode`, `resourcesPerNode` and the
environment (Secret references included); a `runtimePatches` entry adds what the runtime lacks: /dev/shm and
the runs volume, their mounts, node selector, tolerations, service account and pod labels. Trainer's
admission webhook refuses env in a patch of the `node` container and the torchrun variables (PET_*) in
`spec.trainer.env`, and wants the patch's `manager` to be a domain-prefixed path; the builder keeps to that.
"""

from __future__ import annotations

from typing import Any

from asymvae.cluster.jobspec import (
    NO_ISTIO,
    TrainingJobSpec,
    container_env,
    container_resources,
    job_labels,
    job_metadata,
    scheduling,
    train_args,
    volumes_and_mounts,
)

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE = "node"
"""The torch-distributed runtime's replicated job and container name."""
PATCH_MANAGER = "asymvae.github.io/train-step"
"""`runtimePatches[].manager`: who owns the patch (a domain-prefixed path, as Trainer's webhook requires)."""
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
"""JobSet labels every pod with its JobSet's name, which is the TrainJob's."""
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
"""The node index of an Indexed Job's pod (0: the node running global rank 0)."""
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
"""torchrun variables Trainer sets itself and refuses in `spec.trainer.env`."""


def build_trainjob(spec: TrainingJobSpec) -> dict[str, Any]:
    """The TrainJob manifest for `spec` (pure). Validate it with asymvae.cluster.crd against Trainer's CRD."""
    env = container_env(spec)
    reserved = sorted({e["name"] for e in env} & set(RESERVED_ENV))
    if reserved:
        raise ValueError(f"env sets {', '.join(reserved)}, which Trainer sets itself; remove them from the spec")
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": ["asymvae", *train_args(spec)],
        "numNodes": spec.nodes,
        "numProcPerNode": spec.processes_per_node,
        "env": env,
    }
    resources = container_resources(spec)
    if resources:
        trainer["resourcesPerNode"] = resources
    volumes, mounts = volumes_and_mounts(spec)
    pod: dict[str, Any] = dict(scheduling(spec))
    if volumes:
        pod["volumes"] = volumes
        pod["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    node_patch = {
        "name": NODE,
        "template": {
            "spec": {"template": {"metadata": {"labels": job_labels(spec), "annotations": dict(NO_ISTIO)}, "spec": pod}}
        },
    }
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": spec.runtime},
        "trainer": trainer,
        "runtimePatches": [
            {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_patch]}}}}
        ],
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": job_metadata(spec, job_spec), "spec": job_spec}
