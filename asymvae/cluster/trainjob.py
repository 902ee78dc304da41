"""A `TrainingJobSpec` as a Kubeflow Trainer v2 `trainer.kubeflow.org/v1alpha1` TrainJob (pure builder).

The job runs on a ClusterTrainingRuntime (`torch-distributed` by default: one replicated job `node` whose
container is `node`), which Trainer turns into a JobSet. `spec.trainer` carries the image, the command,
`numNodes`, `numProcPerNode`, `resourcesPerNode` and the environment (Secret references included). What the
runtime lacks goes into the pod template of its `node` job: /dev/shm and the runs volume, their mounts, node
selector, tolerations, service account and pod labels. The TrainJob API has two forms for that template:

- `runtimePatches` (Trainer v2.2 and later, the default): a patch of the runtime's JobSet template, keyed by a
  `manager` that Trainer's webhook wants to be a domain-prefixed path.
- `podTemplateOverrides` (Trainer v2.1, which Kubeflow 26.03 installs; its CRD, kubeflow/trainer v2.1.0
  manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml, has no `runtimePatches` and no
  `activeDeadlineSeconds`): the pod template's metadata and spec, with `targetJobs: [{name: node}]`.

Each Trainer knows only its own form, and an API server prunes an unknown field unless asked for strict field
validation; the runner (asymvae.cluster.runner) asks for it and, told that `spec.runtimePatches` is unknown,
sends the job again in the v2.1 form (`in_form`). Both forms carry the same spec hash, so a retried step
recognises its job in either. Trainer's admission webhook (both versions) refuses env in the `node` container
of a patch or override and the torchrun variables (PET_*) in `spec.trainer.env`; the builder keeps to that.
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
RUNTIME_PATCHES = "runtimePatches"
"""The form of Trainer v2.2 and later: the node's pod template in `spec.runtimePatches`."""
POD_TEMPLATE_OVERRIDES = "podTemplateOverrides"
"""The form of Trainer v2.1: the node's pod template in `spec.podTemplateOverrides`."""
FORMS = (RUNTIME_PATCHES, POD_TEMPLATE_OVERRIDES)
DEADLINE = "activeDeadlineSeconds"
"""`spec.activeDeadlineSeconds`: came with Trainer v2.2's API, as `runtimePatches` did."""


def build_trainjob(spec: TrainingJobSpec, form: str = RUNTIME_PATCHES) -> dict[str, Any]:
    """The TrainJob manifest for `spec` (pure), in `form` (`runtimePatches`: Trainer v2.2+, the default;
    `podTemplateOverrides`: Trainer v2.1). Its spec hash is the same in both forms. The tests validate
    it against the CRD of each Trainer it is meant for (tests/support/crd.py)."""
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
    template = {"metadata": {"labels": job_labels(spec), "annotations": dict(NO_ISTIO)}, "spec": pod}
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": spec.runtime},
        "trainer": trainer,
    }
    job_spec = _with_template(job_spec, template, RUNTIME_PATCHES)
    if spec.active_deadline_seconds is not None:
        job_spec[DEADLINE] = spec.active_deadline_seconds
    job = {"apiVersion": API_VERSION, "kind": KIND, "metadata": job_metadata(spec, job_spec), "spec": job_spec}
    return in_form(job, form)


def in_form(job: dict[str, Any], form: str) -> dict[str, Any]:
    """`job`, a TrainJob as `build_trainjob` writes it (in either form), in `form`: the node's pod template
    moved between `spec.runtimePatches` and `spec.podTemplateOverrides`, the metadata (spec hash included)
    unchanged. ValueError when the job holds what `form` cannot carry: other patches or overrides than the
    builder's one of the `node` job, or `spec.activeDeadlineSeconds` in the v2.1 form (Trainer v2.1 has none)."""
    if form not in FORMS:
        raise ValueError(f"a TrainJob's form must be one of {FORMS}, got {form!r}")
    template = node_pod_template(job)
    if job["spec"] != _with_template(job["spec"], template, form_of(job)):
        raise ValueError(
            f"the TrainJob's spec.{form_of(job)} holds more than a pod template of the {NODE!r} job, so it "
            f"cannot be written as spec.{form}; write it for the Trainer version the cluster runs"
        )
    if form == POD_TEMPLATE_OVERRIDES and DEADLINE in job["spec"]:
        raise ValueError(
            f"the TrainJob's spec.{DEADLINE} needs Trainer v2.2 or later (v2.1's TrainJob has no such field); "
            "leave active_deadline_seconds unset (the runner's own deadline, timeout_s, still ends the job)"
        )
    return {**job, "spec": _with_template(job["spec"], template, form)}


def node_pod_template(job: dict[str, Any]) -> dict[str, Any]:
    """The pod template (`metadata`, `spec`) a TrainJob sets on its runtime's `node` job, in either form
    ({} when it sets none)."""
    for override in job["spec"].get(POD_TEMPLATE_OVERRIDES, []):
        if {"name": NODE} in override.get("targetJobs", []):
            return {k: override[k] for k in ("metadata", "spec") if k in override}
    for patch in job["spec"].get(RUNTIME_PATCHES, []):
        for rjob in patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get("replicatedJobs", []):
            if rjob.get("name") == NODE:
                return rjob.get("template", {}).get("spec", {}).get("template", {})
    return {}


def form_of(job: dict[str, Any]) -> str:
    """The form a TrainJob is written in: `podTemplateOverrides` (Trainer v2.1) or `runtimePatches`."""
    return POD_TEMPLATE_OVERRIDES if POD_TEMPLATE_OVERRIDES in job["spec"] else RUNTIME_PATCHES


def _with_template(job_spec: dict[str, Any], template: dict[str, Any], form: str) -> dict[str, Any]:
    """`job_spec` with `template` as the `node` job's pod template in `form`, in place of the entry of either
    form it holds (else last); with no entry when `template` is empty."""
    entry: dict[str, Any] = {}
    if template and form == POD_TEMPLATE_OVERRIDES:
        entry = {form: [{"targetJobs": [{"name": NODE}], **template}]}
    elif template:
        node = {"name": NODE, "template": {"spec": {"template": template}}}
        replicated = {"template": {"spec": {"replicatedJobs": [node]}}}
        entry = {form: [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": replicated}]}
    out: dict[str, Any] = {}
    for key, value in job_spec.items():
        if key not in FORMS:
            out[key] = value
        elif entry:
            out.update(entry)
            entry = {}
    return {**out, **entry}
