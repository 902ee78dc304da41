"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (or constant)."""

from __future__ import annotations

import math

import torch

from asymvae.training.config import OptimConfig


def lr_factor(step: int, cfg: OptimConfig, max_steps: int, peak_lr: float) -> float:
    """Multiplier of `peak_lr` at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = min(cfg.min_lr / peak_lr, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int, peak_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `lr_factor`; step it once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps, peak_lr))
