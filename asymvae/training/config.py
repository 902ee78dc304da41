"""Configuration of the optimiser and of the training run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Precision = Literal["no", "bf16", "fp16"]
PRECISIONS = get_args(Precision)
SWITCHES = ("auto", "on", "off")
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES = get_args(CompileMode)
ReportTo = Literal["tensorboard", "wandb", "mlflow", "all", "none"]
REPORT_TO = get_args(ReportTo)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (or a constant rate)."""

    lr: float = 1e-4
    """Peak learning rate (after warm-up), per `scale_lr` below."""
    scale_lr: bool = False
    """Multiply `lr` by the global batch size (the official recipe: 4.5e-6 x global batch)."""
    betas: tuple[float, float] = (0.5, 0.9)
    """Adam betas (official: 0.5, 0.9)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    eps: float = 1e-8
    """Adam epsilon."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """`cosine`: warm-up then cosine to `min_lr`; `constant`: warm-up then flat."""
    warmup_steps: int = 0
    """Linear warm-up from 0, in optimizer steps."""
    min_lr: float = 1e-6
    """Floor of the cosine decay (absolute, not scaled)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping)."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be cosine or constant, got {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("optim.lr must be > 0 and optim.warmup_steps >= 0")


@dataclass
class TrainConfig:
    """Length, batch, precision, checkpoints and logging of a run."""

    max_steps: int = 1000
    """Optimizer steps to train for."""
    batch_size: int = 4
    """Images per device per micro-step; the global batch is batch_size x processes x grad_accum."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    mixed_precision: Precision = "bf16"
    """`no` (fp32), `bf16` or `fp16` autocast; weights stay fp32."""
    seed: int = 0
    """Seeds model init, data order, augmentation, masks and posterior samples."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N optimizer steps (and at the end)."""
    keep_checkpoints: int = 2
    """Keep only the newest N complete checkpoints."""
    log_every: int = 10
    """Refresh the progress bar and write metrics every N steps (the only host syncs of the loop)."""
    ema: bool = False
    """Keep an exponential moving average of the trained weights; the export then uses it."""
    ema_decay: float = 0.9999
    """EMA decay per optimizer step."""
    output_dir: str | None = None
    """Where checkpoints, logs and the export go (default: work_dirs/<name>)."""
    mirror: str = ""
    """Object store (`s3://bucket/prefix`, or a folder) the run's checkpoints and export are mirrored to, so the
    run needs no shared volume: each checkpoint and the export are uploaded once complete (marker last), and
    `--resume` with an output folder holding no newer checkpoint downloads the mirror's newest first. Empty: off.
    The prefix must be empty or a mirror asymvae wrote (docs/training.md)."""
    progress: bool = True
    """Show a progress bar on rank 0 on a terminal; elsewhere (or when off) a line with step, elapsed time, rate
    and ETA is logged at most every 30 s (and at the first and last logged step)."""
    report_to: ReportTo = "tensorboard"
    """Experiment trackers the metrics and the validation grid go to, through accelerate: `tensorboard` (event
    files in OUTPUT/logs/tensorboard/<name>), `wandb` or `mlflow` (when installed), `all` (every installed
    one) or `none`."""
    validate_every: int = 500
    """Every N optimizer steps (and at the last), rank 0 decodes `validation_images` fixed masked images and
    logs them to the trackers as one grid (input, masked, decoded, error); 0: never."""
    validation_images: int = 4
    """Images in the validation grid: the first of the prepared dataset's validation split (held out), else
    the first training images."""
    compile: bool | str = "auto"
    """torch.compile the decoder, the frozen encoder and the loss with static shapes: `auto` (on a GPU),
    `on` or `off`. The first steps then take a minute or two longer (compilation); see benchmarks/RESULTS.md."""
    ddp_bucket_mb: int = 25
    """DDP gradient bucket size in MB (PyTorch's default): with compile, dynamo also splits the graph at
    bucket boundaries so each bucket's all-reduce overlaps the rest of the backward pass."""
    compile_mode: CompileMode = "default"
    """torch.compile mode: `default`, `reduce-overhead` (CUDA graphs), `max-autotune` or
    `max-autotune-no-cudagraphs` (long compilation)."""
    channels_last: bool | str = "auto"
    """Keep images and conv weights in channels-last layout: `on`, or `off` (`auto` = off: on an H200 it
    slowed eager bf16 and compiled bf16 alike; benchmarks/RESULTS.md)."""
    metrics_port: int | None = None
    """Rank 0 serves Prometheus /metrics on this port while training (0: any free port; None: off).
    The environment variable ASYMVAE_METRICS_PORT overrides it (the PyTorchJob sets it)."""
    pushgateway: str | None = None
    """Prometheus Pushgateway URL to push the run's outcome to once at the end (env PUSHGATEWAY_URL overrides)."""

    def __post_init__(self) -> None:
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"train.compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"train.report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.validate_every < 0 or self.validation_images < 1:
            raise ValueError(
                f"train.validate_every must be >= 0 and train.validation_images >= 1, got {self.validate_every} "
                f"and {self.validation_images}"
            )
        for name in ("compile", "channels_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or value in ("True", "False", "true", "false"):  # YAML reads on/off as bools
                setattr(self, name, "on" if str(value).lower() == "true" else "off")
            if getattr(self, name) not in SWITCHES:
                raise ValueError(f"train.{name} must be one of {SWITCHES}, got {getattr(self, name)!r}")
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "ddp_bucket_mb",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"train.metrics_port must be a port number (0 for any free port), got {self.metrics_port}")
