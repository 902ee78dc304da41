"""The train step: resolve the base model, run training (PyTorchJob or in place), put the export in the artifact."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymvae.cluster.pytorchjob import PyTorchJobSpec
from asymvae.cluster.runner import WaitPolicy
from asymvae.cluster.submit import LAUNCHERS, run_training
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
    """Preset name or YAML path (inside the image for launcher=kubeflow)."""
    overrides: list[str] = field(default_factory=list)
    """`section.field=value` config overrides."""
    launcher: str = "local"
    """`kubeflow`: a PyTorchJob; `local`: torchrun in the step's own container / process."""
    image: str = ""
    """The asymvae image the PyTorchJob pods run (launcher=kubeflow)."""
    nodes: int = 1
    """PyTorchJob pods (launcher=kubeflow)."""
    gpus_per_node: int = 0
    """GPUs per pod; also the number of training processes per node (at least 1)."""
    runs_dir: str = "work_dirs/pipeline"
    """Folder holding run folders (checkpoints) and a `preset:` base; for kubeflow the shared PVC's mount point."""
    namespace: str = "asymvae"
    """Namespace of the PyTorchJob."""
    output_pvc: str = ""
    """PVC mounted at `runs_dir` in the job's pods (launcher=kubeflow; multi-node checkpoints need it)."""
    credentials_secret: str = "mlpipeline-minio-artifact"
    """Secret with the object-store keys (accesskey/secretkey) for the job's pods."""
    s3_endpoint: str = ""
    """Object-store endpoint for the job's pods (e.g. `minio-service.kubeflow:9000`)."""
    timeout_s: float = 48 * 3600.0
    """Deadline for the PyTorchJob."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.launcher == "kubeflow" and not self.image:
            raise ValueError("launcher=kubeflow needs image: the asymvae image the PyTorchJob pods run")
        if self.nodes > 1 and self.launcher == "local":
            raise ValueError("launcher=local runs on one node; use launcher=kubeflow for nodes > 1")


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


def train_step(
    cfg: TrainStepConfig, shards_uri: str, model_dir: str, job_name: str, api_client: Any = None
) -> dict[str, Any]:
    """Train on the shards at `shards_uri` and copy the final export into `model_dir` (`vae/`, `config.yaml`,
    and `baseline/vae` when the base is a local folder). Returns the artifact's metadata.

    `api_client` (a kubernetes ApiClient, launcher=kubeflow) defaults to the pod's service account or kubeconfig.
    """
    exp = load_experiment(cfg.config, cfg.overrides)  # a bad config fails here, before any job starts
    overrides = list(cfg.overrides)
    base = resolve_base(exp.model.pretrained, cfg.runs_dir)
    if base != exp.model.pretrained:
        overrides.append(f"model.pretrained={base}")
    output = str(Path(cfg.runs_dir) / job_name)
    kubeflow = cfg.launcher == "kubeflow"
    spec = PyTorchJobSpec(
        name=job_name,
        image=cfg.image or "local",
        config=cfg.config,
        overrides=overrides,
        namespace=cfg.namespace,
        nodes=cfg.nodes,
        gpus_per_node=cfg.gpus_per_node,
        shards_uri=shards_uri,
        output_uri=output,
        output_pvc=(cfg.output_pvc or None) if kubeflow else None,
        output_mount=cfg.runs_dir,
        credentials_secret=(cfg.credentials_secret or None) if kubeflow else None,
        s3_endpoint=cfg.s3_endpoint or None,
        # Locally several steps (and tests) may run at once: no fixed metrics port.
        metrics_port=9090 if kubeflow else None,
    )
    policy = WaitPolicy(timeout_s=cfg.timeout_s, poll_s=min(15.0, cfg.timeout_s)) if kubeflow else None
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
