"""A distributed training job as data: one typed spec, and the pieces every job kind's pods share.

`TrainingJobSpec` says what to run and where; `pytorchjob.build_pytorchjob` turns it into a training-operator
v1 `PyTorchJob` and `trainjob.build_trainjob` into a Kubeflow Trainer v2 `TrainJob`. Both run one container
per node with `asymvae train CONFIG ...`; the operator injects PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE
and PET_MASTER_ADDR/PORT, from which `asymvae train` re-executes itself under torchrun
(asymvae/training/launch.py), so the command needs no torchrun. Pure: no cluster, no kubernetes client.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from asymvae.config import override_flag
from asymvae.training.launch import METRICS_PORT_ENV, PUSHGATEWAY_ENV

SPEC_HASH_ANNOTATION = "asymvae/spec-hash"
"""Hash of the job's spec: lets a re-run recognise (and adopt) the job it created before."""
SHARDS_OVERRIDE = "data.shards"
"""The config key the shards URI is passed as (`--data.shards=URI`, the data-prep reader's key)."""
MAX_NAME_LENGTH = 63 - len("-worker-999")
"""Pods are named `<job>-worker-<i>` (PyTorchJob) or `<job>-node-0-<i>-<suffix>` (TrainJob) and must stay
valid 63-character DNS labels."""

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RESTART_POLICIES = ("Never", "OnFailure", "ExitCode", "Always")
CLEAN_POD_POLICIES = ("None", "Running", "All")


@dataclass
class Toleration:
    """A pod toleration (e.g. for the taint GPU node pools usually carry)."""

    key: str
    """Taint key, e.g. `nvidia.com/gpu`."""
    operator: str = "Exists"
    """`Exists` (any value) or `Equal` (then `value` must match)."""
    value: str | None = None
    """Taint value, with operator `Equal`."""
    effect: str | None = "NoSchedule"
    """Taint effect to tolerate (`NoSchedule`, `PreferNoSchedule`, `NoExecute`); None tolerates all."""

    def __post_init__(self) -> None:
        if self.operator not in ("Exists", "Equal"):
            raise ValueError(f"toleration {self.key!r}: operator must be Exists or Equal, got {self.operator!r}")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists takes no value (use Equal)")

    def to_dict(self) -> dict[str, str]:
        """The Kubernetes form."""
        out = {"key": self.key, "operator": self.operator}
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        return out


def gpu_tolerations() -> list[Toleration]:
    """The taint GPU node pools usually carry (`nvidia.com/gpu`, NoSchedule): the default of every GPU pod."""
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


@dataclass
class OwnerPod:
    """The pod that owns a job: Kubernetes' garbage collector deletes the job when that pod is deleted."""

    name: str
    """Pod name (the downward API's `metadata.name`)."""
    uid: str
    """Pod UID (the downward API's `metadata.uid`)."""

    def reference(self) -> dict[str, Any]:
        """The `metadata.ownerReferences` entry. No `blockOwnerDeletion` (setting it needs update rights on
        the pod's finalizers) and no `controller` (the training operator is the job's controller)."""
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


@dataclass
class TrainingJobSpec:
    """Everything a distributed training job needs; `build_pytorchjob` / `build_trainjob` make the manifest."""

    name: str
    """Job name (a DNS label, at most MAX_NAME_LENGTH characters)."""
    image: str
    """Container image holding asymvae (docker/Dockerfile), pinned by tag or digest."""
    config: str = "demo"
    """Preset name (`asymvae configs`) or a YAML path inside the image or a mounted volume."""
    overrides: list[str] = field(default_factory=list)
    """`section.field=value` config overrides, passed as flags (`--section.field=value`)."""
    namespace: str = "asymvae"
    """Namespace to run in (the pipeline's train step passes its own pod's namespace)."""
    nodes: int = 1
    """Pods: one per node (PyTorchJob: one Master plus nodes - 1 Workers)."""
    gpus_per_node: int = 1
    """`nvidia.com/gpu` limit per pod (0: a CPU-only job)."""
    nproc_per_node: int | None = None
    """Training processes per pod (torchrun's nproc_per_node); default: gpus_per_node, or 1 without GPUs."""
    shards_uri: str | None = None
    """Prepared shards (`s3://bucket/prefix` or a path), passed as `--data.shards=URI`."""
    output_uri: str | None = None
    """Run folder (checkpoints, logs, export), passed as `--output`. Multi-node runs need shared storage."""
    resume: bool = True
    """Pass `--resume`: a restarted pod continues from the newest complete checkpoint instead of step 0."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the pods must match, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}."""
    tolerations: list[Toleration] = field(default_factory=gpu_tolerations)
    """Taints the pods tolerate (default: the usual `nvidia.com/gpu` NoSchedule taint)."""
    shm_size: str | None = "16Gi"
    """Size of the memory-backed /dev/shm (DataLoader workers and NCCL need more than the runtime's 64 MiB)."""
    credentials_secret: str | None = None
    """Secret holding the object-store keys (e.g. KFP's `mlpipeline-minio-artifact`); None: no credentials."""
    credentials_keys: dict[str, str] = field(
        default_factory=lambda: {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
    )
    """Environment variable -> key in `credentials_secret` (defaults: KFP's Secret's keys)."""
    s3_endpoint: str | None = None
    """Object-store endpoint (host:port) set as S3_ENDPOINT, e.g. `seaweedfs.kubeflow:9000`."""
    s3_use_https: bool = False
    """Set as S3_USE_HTTPS (1/0), as KServe names it."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the container."""
    cpu: str | None = None
    """CPU request and limit per pod (e.g. "16"); None: unset (a namespace with a ResourceQuota refuses it)."""
    memory: str | None = None
    """Memory request and limit per pod (e.g. "128Gi"); None: unset."""
    service_account: str | None = None
    """Pod service account (None: the namespace's default)."""
    image_pull_policy: str = "IfNotPresent"
    """Container imagePullPolicy."""
    metrics_port: int | None = 9090
    """Port rank 0 serves Prometheus /metrics on (set as ASYMVAE_METRICS_PORT; the PodMonitor scrapes `metrics`)."""
    pushgateway: str | None = None
    """Pushgateway URL for the final outcome (set as PUSHGATEWAY_URL)."""
    output_pvc: str | None = None
    """A PersistentVolumeClaim mounted at `output_mount` on every pod (shared checkpoints for multi-node)."""
    output_mount: str = "/mnt/output"
    """Where `output_pvc` is mounted; `output_uri` defaults to `<output_mount>/<name>` when a PVC is given."""
    restart_policy: str = "OnFailure"
    """PyTorchJob pod restarts. `OnFailure` restarts the container in place and the operator counts those
    restarts against `backoff_limit`, so a pod OOM-killed again and again ends the job. `ExitCode` recreates
    the pod instead, and training-operator v1 never counts recreated pods: an OOM loop would run until the
    deadline (the runner's restart watch still ends it, see runner.WaitPolicy.max_restarts)."""
    backoff_limit: int = 3
    """Container restarts allowed before the operator marks the PyTorchJob Failed."""
    active_deadline_seconds: int | None = None
    """The operator fails the job after this many seconds (None: no limit; the runner has its own deadline)."""
    clean_pod_policy: str = "Running"
    """PyTorchJob pods deleted when the job ends: `None`, `Running` (still-running workers), `All`."""
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    """The operator deletes the finished PyTorchJob after this long (None: never)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels on the job and its pods."""
    owner: OwnerPod | None = None
    """The pod that owns the job (the pipeline's train step): deleting that pod deletes the job."""
    runtime: str = "torch-distributed"
    """TrainJob only: the ClusterTrainingRuntime to run on (Trainer v2's PyTorch runtime)."""

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name) or len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"job name {self.name!r} must be lowercase letters, digits and '-', start with a letter, "
                f"end with a letter or digit, and be at most {MAX_NAME_LENGTH} characters"
            )
        if not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid Kubernetes namespace name")
        if not self.image:
            raise ValueError("image must name the container image holding asymvae")
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.nproc_per_node is not None and self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.restart_policy not in RESTART_POLICIES:
            raise ValueError(f"restart_policy must be one of {RESTART_POLICIES}, got {self.restart_policy!r}")
        if self.clean_pod_policy not in CLEAN_POD_POLICIES:
            raise ValueError(f"clean_pod_policy must be one of {CLEAN_POD_POLICIES}, got {self.clean_pod_policy!r}")
        if self.backoff_limit < 0:
            raise ValueError(f"backoff_limit must be >= 0, got {self.backoff_limit}")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be a port number 1-65535, got {self.metrics_port}")
        for item in self.overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must be KEY=VALUE, e.g. train.max_steps=1000")
        self.tolerations = [t if isinstance(t, Toleration) else Toleration(**t) for t in self.tolerations]
        if isinstance(self.owner, dict):
            self.owner = OwnerPod(**self.owner)

    @property
    def processes_per_node(self) -> int:
        """torchrun's nproc_per_node: nproc_per_node, else one per GPU, else 1."""
        return self.nproc_per_node or self.gpus_per_node or 1

    @property
    def output(self) -> str | None:
        """The run folder passed as --output."""
        if self.output_uri:
            return self.output_uri
        return f"{self.output_mount.rstrip('/')}/{self.name}" if self.output_pvc else None


def train_args(spec: TrainingJobSpec) -> list[str]:
    """The `asymvae` arguments of the run: `train CONFIG [--section.field=value ...] [--resume] [--output OUT]`."""
    args = ["train", spec.config]
    sets = list(spec.overrides)
    if spec.shards_uri:
        sets.append(f"{SHARDS_OVERRIDE}={spec.shards_uri}")
    args += [override_flag(item) for item in sets]
    if spec.resume:
        args.append("--resume")
    if spec.output:
        args += ["--output", spec.output]
    return args


def plain_env(spec: TrainingJobSpec) -> dict[str, str]:
    """The environment the run needs besides credentials (the same for the cluster and for local runs)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if spec.metrics_port is not None:
        env[METRICS_PORT_ENV] = str(spec.metrics_port)
    if spec.pushgateway:
        env[PUSHGATEWAY_ENV] = spec.pushgateway
    if spec.s3_endpoint:
        env["S3_ENDPOINT"] = spec.s3_endpoint
        env["S3_USE_HTTPS"] = "1" if spec.s3_use_https else "0"
    env.update(spec.env)
    return env


def container_env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """The container's `env`: plain values, then the object-store keys as Secret references (never values)."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain_env(spec).items()]
    if spec.credentials_secret:
        env += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": spec.credentials_secret, "key": key}}}
            for var, key in spec.credentials_keys.items()
        ]
    return env


def container_resources(spec: TrainingJobSpec) -> dict[str, dict[str, Any]]:
    """`resources` of one node's container: GPUs as a limit, CPU and memory as equal request and limit."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = spec.gpus_per_node
    for name, value in (("cpu", spec.cpu), ("memory", spec.memory)):
        if value is not None:
            limits[name] = requests[name] = value
    return {k: v for k, v in (("limits", limits), ("requests", requests)) if v}


def volumes_and_mounts(spec: TrainingJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes (memory-backed /dev/shm, the runs PVC) and the container's mounts of them."""
    volumes, mounts = [], []
    if spec.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if spec.output_pvc:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": spec.output_pvc}})
        mounts.append({"name": "output", "mountPath": spec.output_mount})
    return volumes, mounts


def scheduling(spec: TrainingJobSpec) -> dict[str, Any]:
    """Pod spec fields that place the pod: service account, node selector, tolerations."""
    pod: dict[str, Any] = {}
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.to_dict() for t in spec.tolerations]
    return pod


def job_labels(spec: TrainingJobSpec) -> dict[str, str]:
    """Labels on the job and on its pods (the PodMonitor selects on `app.kubernetes.io/component`)."""
    return {
        "app.kubernetes.io/name": "asymvae",
        "app.kubernetes.io/component": "training",
        "asymvae/run": spec.name,
        **spec.labels,
    }


def spec_hash(job_spec: dict[str, Any]) -> str:
    """A short, stable hash of a job's `spec` (key order does not matter)."""
    text = json.dumps(job_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_metadata(spec: TrainingJobSpec, job_spec: dict[str, Any]) -> dict[str, Any]:
    """The job's metadata: name, namespace, labels, the spec hash and the owning pod, if any."""
    meta: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": job_labels(spec),
        "annotations": {SPEC_HASH_ANNOTATION: spec_hash(job_spec)},
    }
    if spec.owner is not None:
        meta["ownerReferences"] = [spec.owner.reference()]
    return meta
