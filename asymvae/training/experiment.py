"""The configuration of one training run: its typed sections, composed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asymvae.data.config import DataConfig
from asymvae.losses.config import LossConfig
from asymvae.masks import MaskConfig
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig


@dataclass
class ExperimentConfig:
    """Everything one training run needs."""

    name: str = "experiment"
    """Run name; the default output folder is `work_dirs/<name>`."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The VAE: its base, decoder size and what trains (`asymvae/model/config.py`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training images: source or prepared shards, crops, bad-image policy (`asymvae/data/config.py`)."""
    masks: MaskConfig = field(default_factory=MaskConfig)
    """The mask mix: full masks, strokes, boxes (`asymvae/masks.py`)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Pixel, perceptual and adversarial terms (`asymvae/losses/config.py`)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and learning-rate schedule (`asymvae/training/config.py`)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Steps, batch, precision, checkpoints, logging (`asymvae/training/config.py`)."""

    def __post_init__(self) -> None:
        if self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(
                f"name {self.name!r} is not a plain folder name (it names the output folder work_dirs/<name>, "
                "so it may not hold '/' or be '..'). Fix: name the run like my_run; write elsewhere with --output."
            )

    @property
    def output_dir(self) -> Path:
        """Where checkpoints, logs and exports go."""
        return Path(self.train.output_dir or Path("work_dirs") / self.name)
