"""The train step: resolve the base model, run training (PyTorchJob, TrainJob or in place), put the export in the
artifact. On a cluster the job goes to the step's own namespace, is owned by the step's pod, and is deleted
when the step is told to stop (SIGTERM). A failure of the training itself is recorded in the run's output
location, and a retry of the step that finds it stops at once (asymvae.cluster.verdict)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymvae.cluster.interrupt import stop_on_sigterm
from asymvae.cluster.jobspec import Toleration, TrainingJobSpec, gpu_tolerations
from asymvae.cluster.pod import own_namespace, own_pod, resolve_namespace
from asymvae.cluster.runner import WaitPolicy
from asymvae.cluster.submit import BUILDERS, LAUNCHERS, run_training
from asymvae.cluster.verdict import recording_failure, refuse_after_failure
from asymvae.config import ConfigError
from asymvae.storage import join_uri
from asymvae.training.output import latest_export
from asymvae.training.presets import get_preset, load_experiment
from asymvae.training.run import PRESET_PREFIX, train

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
"""Inside the Model artifact: the base VAE the decoder was trained on, when it is a local folder (`<dir>/vae`)."""


@dataclass
class TrainStepConfig:
    """What the train step runs and where."""

    config: str = "demo"
    """Preset name or YAML path (inside the image for the cluster launchers)."""
    overrides: list[str] = field(default_factory=list)
    """`section.field=value` config overrides."""
    launcher: str = "local"
    """`trainjob`: a Kubeflow Trainer v2 TrainJob; `pytorchjob`: a PyTorchJob (training operator v1);
    `local`: torchrun in the step's own container / process."""
    image: str = ""
    """The asymvae image the job's pods run (cluster launchers)."""
    nodes: int = 1
    """Pods of the job, one per node (cluster launchers)."""
    gpus_per_node: int = 0
    """GPUs per pod; also the number of training processes per node (at least 1)."""
    runs_dir: str = "work_dirs/pipeline"
    """Folder holding run folders (checkpoints) and a `preset:` base; for kubeflow the shared PVC's mount point."""
    namespace: str = ""
    """Namespace of the job; empty: the step's own (its pod's, from the downward API)."""
    output_pvc: str = ""
    """PVC mounted at `runs_dir` in the job's pods (cluster launchers; multi-node checkpoints need it). It is
    the same volume as the step's only when both live in one namespace."""
    credentials_secret: str = "mlpipeline-minio-artifact"
    """Secret with the object-store keys (accesskey/secretkey) for the job's pods."""
    s3_endpoint: str = ""
    """Object-store endpoint for the job's pods (e.g. `seaweedfs.kubeflow:9000`)."""
    s3_use_https: bool = False
    """TLS to the object store (S3_USE_HTTPS)."""
    cpu: str = ""
    """CPU request and limit of each job pod (empty: unset)."""
    memory: str = ""
    """Memory request and limit of each job pod (empty: unset)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the job's pods must match (e.g. a GPU product)."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Taints the job's pods tolerate besides the `nvidia.com/gpu` NoSchedule taint (tolerated by every GPU
    pod), in Kubernetes' form."""
    max_restarts: int = 3
    """Restarts of the job's pods after which the job is deleted and the step fails (ends an OOM loop)."""
    timeout_s: float = 48 * 3600.0
    """Deadline for the job."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.launcher in BUILDERS and not self.image:
            raise ValueError(f"launcher={self.launcher} needs image: the asymvae image the job's pods run")
        if self.nodes > 1 and self.launcher == "local":
            raise ValueError("launcher=local runs on one node; use launcher=trainjob or pytorchjob for nodes > 1")


def resolve_base(pretrained: str | None, runs_dir: str) -> str | None:
    """`preset:NAME` → the folder of that preset's newest export under `runs_dir/NAME` (trained here first if
    missing); anything else unchanged. The base then travels to the job as a plain `model.pretrained` path."""
    if not pretrained or not pretrained.startswith(PRESET_PREFIX):
        return pretrained
    base_cfg = get_preset(pretrained[len(PRESET_PREFIX) :])
    base_cfg.train.output_dir = str(Path(runs_dir) / base_cfg.name)
    found = latest_export(Path(base_cfg.train.output_dir))
    if found is None:
        log.info("training the base %s into %s first", pretrained, base_cfg.train.output_dir)
        found = train(base_cfg, resume=True).export
    return str(Path(found) / "vae")


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
    cfg: TrainStepConfig, shards_uri: str, model_dir: str, job_name: str, api_client: Any = None
) -> dict[str, Any]:
    """Train on the shards at `shards_uri` and copy the final export into `model_dir` (`vae/`, `config.yaml`,
    and `baseline/vae` when the base is a local folder). Returns the artifact's metadata.

    `api_client` (a kubernetes ApiClient, cluster launchers) defaults to the pod's service account or kubeconfig.
    A retry of the step (the same `job_name`) after the training itself failed raises EarlierAttemptFailedError
    before it starts anything; after any other fault it adopts the running job or starts one.
    """
    output = join_uri(cfg.runs_dir, job_name)
    refuse_after_failure(output)
    exp = load_experiment(cfg.config, cfg.overrides)  # a bad config fails here, before any job starts
    overrides = list(cfg.overrides)
    base = resolve_base(exp.model.pretrained, cfg.runs_dir)
    if base != exp.model.pretrained:
        overrides.append(f"model.pretrained={base}")
    cluster = cfg.launcher in BUILDERS
    spec = TrainingJobSpec(
        name=job_name,
        image=cfg.image or "local",
        config=cfg.config,
        overrides=overrides,
        namespace=_job_namespace(cfg) if cluster else (cfg.namespace or "default"),
        nodes=cfg.nodes,
        gpus_per_node=cfg.gpus_per_node,
        shards_uri=shards_uri,
        output_uri=output,
        output_pvc=(cfg.output_pvc or None) if cluster else None,
        output_mount=cfg.runs_dir,
        credentials_secret=(cfg.credentials_secret or None) if cluster else None,
        s3_endpoint=cfg.s3_endpoint or None,
        s3_use_https=cfg.s3_use_https,
        cpu=cfg.cpu or None,
        memory=cfg.memory or None,
        node_selector=dict(cfg.node_selector),
        tolerations=(gpu_tolerations() if cfg.gpus_per_node else []) + [Toleration(**t) for t in cfg.tolerations],
        owner=own_pod() if cluster else None,
        # Locally several steps (and tests) may run at once: no fixed metrics port.
        metrics_port=9090 if cluster else None,
    )
    policy = None
    if cluster:
        policy = WaitPolicy(timeout_s=cfg.timeout_s, poll_s=min(15.0, cfg.timeout_s), max_restarts=cfg.max_restarts)
    with stop_on_sigterm(), recording_failure(output, job_name):
        summary = run_training(spec, cfg.launcher, policy=policy, api_client=api_client)
    export = latest_export(Path(output))
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
    log.info("model %s (from %s) in %s", exp.name, export, target)
    return meta


def baseline_of(model_dir: str, recorded: str) -> str:
    """The baseline VAE of a train step's model: its `baseline/` copy, else what the step recorded."""
    local = Path(model_dir) / BASELINE_DIR
    if (local / "vae" / "config.json").is_file():
        return str(local)
    if not recorded:
        raise ValueError(f"{model_dir} carries no baseline and none was recorded; pass baseline explicitly")
    return recorded
