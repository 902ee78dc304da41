"""The train step: resolve the base model, run training (PyTorchJob, TrainJob or in place), put the export in the
artifact. On a cluster the job goes to the step's own namespace, is owned by the step's pod, and is deleted
when the step is told to stop (SIGTERM). A failure of the training itself is recorded in the run's output
location, and a retry of the step that finds it stops at once (asymvae.cluster.verdict)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymvae.cluster.interrupt import stop_on_sigterm
from asymvae.cluster.jobspec import Toleration, TrainingJobSpec, gpu_tolerations
from asymvae.cluster.pod import IMAGE_ENV, own_namespace, own_pod, resolve_namespace
from asymvae.cluster.runner import WaitPolicy
from asymvae.cluster.submit import BUILDERS, LAUNCHERS, run_training
from asymvae.cluster.verdict import recording_failure, refuse_after_failure
from asymvae.config import ConfigError
from asymvae.storage import join_uri
from asymvae.training.logger import TENSORBOARD_DIR
from asymvae.training.mirror import RunMirror, fetch_export
from asymvae.training.output import latest_export
from asymvae.training.presets import load_experiment
from asymvae.training.run import resolve_pretrained

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
"""Inside the Model artifact: the base VAE the decoder was trained on, when it is a local folder (`<dir>/vae`)."""


TENSORBOARD_IN_MODEL = "tensorboard"
"""Inside the Model artifact: the run's TensorBoard log dir (`OUTPUT/logs/tensorboard`), from the run folder
(launcher=local, or a shared runs volume) or from the run's mirror in the object store (the cluster default)."""
TENSORBOARD_CRD = "tensorboard.kubeflow.org/v1alpha1"
"""Kubeflow's Tensorboard resource (kubeflow/kubeflow components/tensorboard-controller/api/v1alpha1/
tensorboard_types.go: `spec.logspath`, an object-store URI or `pvc://<claim>/<path>`)."""

RUNS_MOUNT = "/mnt/runs"
"""Where the cluster launchers' runs volume is mounted (the step's and the job's pods)."""
LOCAL_RUNS = "work_dirs/pipeline"
"""The run folders without a runs volume (relative to the working folder of the step and the job's pods)."""
MIRROR_DIR = "run"
"""Under the task's object-store prefix: the training's mirror (`train.mirror`) when there is no runs volume."""


@dataclass
class TrainStepConfig:
    """What the train step runs and where: the one source of the train component's (and through it the
    pipeline's) parameters, their types, defaults and documentation (see asymvae_components._params)."""

    config: str = "demo"
    """Training preset or YAML path (in the image for the cluster launchers; `asymvae configs` lists presets)."""
    overrides: list[str] = field(default_factory=list)
    """`section.field=value` training overrides, e.g. `train.max_steps=1000`."""
    launcher: str = "trainjob"
    """`trainjob`: a Kubeflow Trainer v2 TrainJob on the `torch-distributed` runtime (what the Kubeflow
    platform installs); `pytorchjob`: a training-operator v1 PyTorchJob (Master + nodes-1 Workers); `local`:
    torchrun in the train step's own container."""
    image: str = ""
    """Image of the training job's pods; empty: the train step's own image."""
    nodes: int = 1
    """Pods of the training job, one per node."""
    gpus_per_node: int = 1
    """GPUs per training pod (= training processes per node, at least 1); with launcher=local the processes
    the train step starts."""
    runs_dir: str = ""
    """Run folders (checkpoints, the export); empty: /mnt/runs (the runs volume) with `output_pvc`, else
    work_dirs/pipeline (relative to the working folder of the step and of the job's pods)."""
    namespace: str = ""
    """Namespace of the training job; empty: the train step's own (its pod's)."""
    output_pvc: str = ""
    """A ReadWriteMany PVC holding the run folders, mounted at /mnt/runs in the step and the job's pods (the
    same volume only when both live in one namespace); empty: no shared volume: each pod keeps its run folder
    on its own disk, and checkpoints and the export go through the object store (`train.mirror`, beside the
    model artifact), from which a restarted pod or a retried step resumes."""
    credentials_secret: str = "mlpipeline-minio-artifact"
    """Secret with the object-store keys (`accesskey`, `secretkey`) for the job's pods."""
    s3_endpoint: str = ""
    """Object-store endpoint (host:port) of the step and the job's pods; empty: the step's S3_ENDPOINT."""
    s3_use_https: bool = False
    """TLS to the object store."""
    node_cpu: str = "8"
    """CPU request and limit of each training pod (empty: unset)."""
    node_memory: str = "64Gi"
    """Memory request and limit of each training pod (empty: unset)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the training pods must match (e.g. a GPU product)."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Taints the training pods tolerate (Kubernetes' form) besides `nvidia.com/gpu` (NoSchedule), which GPU
    pods always tolerate."""
    max_restarts: int = 3
    """Restarts of the training pods (e.g. OOM kills) after which the job is deleted and the step fails."""
    timeout_s: float = 48 * 3600.0
    """Deadline of the training job, in seconds."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.nodes > 1 and self.launcher == "local":
            raise ValueError("launcher=local runs on one node; use launcher=trainjob or pytorchjob for nodes > 1")

    @property
    def cluster(self) -> bool:
        """True for the launchers that create a training job (trainjob, pytorchjob)."""
        return self.launcher in BUILDERS

    def job_image(self) -> str:
        """The job's image: `image`, else the step's own (ASYMVAE_IMAGE); ValueError when neither is known."""
        found = self.image or os.environ.get(IMAGE_ENV, "")
        if self.cluster and not found:
            raise ValueError(
                f"launcher={self.launcher} needs the image the job's pods run: set `image` (or {IMAGE_ENV}, which "
                "the pipeline sets to the step's own image)"
            )
        return found or "local"

    def runs_folder(self) -> str:
        """`runs_dir`, or its default: the runs volume's mount point when there is one."""
        return self.runs_dir or (RUNS_MOUNT if self.cluster and self.output_pvc else LOCAL_RUNS)


def _job_namespace(cfg: TrainStepConfig) -> str:
    """The job's namespace; refuses a PVC hand-over across namespaces (two claims of one name are two volumes)."""
    here = own_namespace()
    target = resolve_namespace(cfg.namespace)
    if cfg.output_pvc and here and target != here:
        raise ConfigError(
            f"the job would run in namespace {target!r} but this step runs in {here!r}: PVC {cfg.output_pvc!r} "
            "names a different volume in each, so the step would never see the job's export. Leave the "
            "namespace empty (the step's own) or run the pipeline in that namespace"
        )
    return target


def train_step(
    cfg: TrainStepConfig,
    shards_uri: str,
    model_dir: str,
    job_name: str,
    api_client: Any = None,
    run_store: str = "",
) -> dict[str, Any]:
    """Train on the shards at `shards_uri` and copy the final export into `model_dir` (`vae/`, `config.yaml`,
    `provenance.json`, and `baseline/vae` when the base is a local folder). Returns the artifact's metadata.

    `run_store` (an object-store prefix of this task, see uris.task_store) holds the run when there is no
    shared volume (`output_pvc` empty): its `run/` is the training's mirror (checkpoints, the export), which
    the job's pods resume from and the step fetches the export from, and a failure verdict is kept there.
    `api_client` (a kubernetes ApiClient, cluster launchers) defaults to the pod's service account or kubeconfig.
    A retry of the step (the same `job_name`) after the training itself failed raises EarlierAttemptFailedError
    before it starts anything; after any other fault it adopts the running job or starts one, which resumes
    from the last checkpoint.
    """
    runs_dir = cfg.runs_folder()
    output = join_uri(runs_dir, job_name)
    mirror = join_uri(run_store, MIRROR_DIR) if run_store and not cfg.output_pvc else ""
    record_at = run_store if mirror else output
    refuse_after_failure(record_at)
    exp = load_experiment(cfg.config, cfg.overrides)  # a bad config fails here, before any job starts
    image = cfg.job_image()
    overrides = list(cfg.overrides)
    base = resolve_pretrained(exp.model.pretrained, runs_dir)
    if base != exp.model.pretrained:
        overrides.append(f"model.pretrained={base}")
    if mirror:
        overrides.append(f"train.mirror={mirror}")
    cluster = cfg.cluster
    spec = TrainingJobSpec(
        name=job_name,
        image=image,
        config=cfg.config,
        overrides=overrides,
        namespace=_job_namespace(cfg) if cluster else (cfg.namespace or "default"),
        nodes=cfg.nodes,
        gpus_per_node=cfg.gpus_per_node,
        shards_uri=shards_uri,
        output_uri=output,
        output_pvc=(cfg.output_pvc or None) if cluster else None,
        output_mount=runs_dir,
        credentials_secret=(cfg.credentials_secret or None) if cluster else None,
        s3_endpoint=cfg.s3_endpoint or os.environ.get("S3_ENDPOINT") or None,
        s3_use_https=cfg.s3_use_https,
        cpu=cfg.node_cpu or None,
        memory=cfg.node_memory or None,
        node_selector=dict(cfg.node_selector),
        tolerations=(gpu_tolerations() if cfg.gpus_per_node else []) + [Toleration(**t) for t in cfg.tolerations],
        owner=own_pod() if cluster else None,
        # Locally several steps (and tests) may run at once: no fixed metrics port.
        metrics_port=9090 if cluster else None,
    )
    policy = None
    if cluster:
        policy = WaitPolicy(timeout_s=cfg.timeout_s, poll_s=min(15.0, cfg.timeout_s), max_restarts=cfg.max_restarts)
    with stop_on_sigterm(), recording_failure(record_at, job_name):
        summary = run_training(spec, cfg.launcher, policy=policy, api_client=api_client)
    # A cluster job's run folder is on its pods' disks: without a shared volume the export comes from the mirror.
    export = fetch_export(mirror, Path(output)) if mirror and cluster else latest_export(Path(output))
    if export is None:
        raise FileNotFoundError(f"training finished but {output} holds no export (step<N>/vae)")
    target = Path(model_dir)
    shutil.copytree(export, target, dirs_exist_ok=True)
    meta: dict[str, Any] = {
        "launcher": cfg.launcher,
        "job": job_name,
        "config": cfg.config,
        "steps": int(export.name[len("step") :]),
        "seconds": round(float(summary.get("seconds", 0.0)), 1),
        "baseline": base or "",
    }
    if base and Path(base).is_dir():
        shutil.copytree(base, target / BASELINE_DIR / "vae", dirs_exist_ok=True)
        meta["baseline"] = BASELINE_DIR
    logs = Path(output) / TENSORBOARD_DIR
    if mirror and cluster:  # the logs stayed on the job's pods too; the mirror holds their copy
        RunMirror(mirror).download_logs(logs)
    if logs.is_dir():
        shutil.copytree(logs, target / TENSORBOARD_IN_MODEL, dirs_exist_ok=True)
        meta["tensorboard"] = TENSORBOARD_IN_MODEL
    log.info("model %s (from %s) in %s", exp.name, export, target)
    return meta


def tensorboard_page(logs_uri: str, name: str) -> str:
    """Markdown for the step's UI: where the run's TensorBoard logs are and how to open them in a Kubeflow
    TensorBoard (`logs_uri` empty: the step could not reach them)."""
    if not logs_uri:
        return (
            "## TensorBoard\n\nThis run wrote no TensorBoard logs (`train.report_to` is not `tensorboard` or "
            "`all`), or the step could not reach them.\n"
        )
    return (
        f"## TensorBoard\n\nThe run's TensorBoard logs (losses, learning rate, throughput, validation grids) are "
        f"in the model artifact: `{logs_uri}`.\n\nOpen them in Kubeflow: *TensorBoards > New TensorBoard*, "
        f"object-store path `{logs_uri}` (the namespace needs a PodDefault that gives the object-store "
        f"credentials), or apply:\n\n```yaml\napiVersion: {TENSORBOARD_CRD}\nkind: Tensorboard\nmetadata:\n"
        f"  name: {name}\nspec:\n  logspath: {logs_uri}\n```\n\nOn a machine with the files: "
        f"`tensorboard --logdir <model>/{TENSORBOARD_IN_MODEL}`.\n"
    )


def baseline_of(model_dir: str, recorded: str) -> str:
    """The baseline VAE of a train step's model: its `baseline/` copy, else what the step recorded."""
    local = Path(model_dir) / BASELINE_DIR
    if (local / "vae" / "config.json").is_file():
        return str(local)
    if not recorded:
        raise ValueError(f"{model_dir} carries no baseline and none was recorded; pass baseline explicitly")
    return recorded
