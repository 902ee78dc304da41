"""What diffusers pipelines read from `vae.config`, and the latent transform they apply before `vae.decode`.

Pipelines denoise *scaled* latents and hand `vae.decode` the VAE's own latent space:

* SD 1.x/2.x and SDXL: `z = latents / scaling_factor` (SDXL's pipelines: `latents * latents_std / scaling_factor +
  latents_mean` when the config has both);
* SD3/3.5 and FLUX.1: `z = latents / scaling_factor + shift_factor`.

They also read `force_upcast` (decode in float32 when the VAE is float16: the SDXL VAE overflows in fp16).
diffusers' `AsymmetricAutoencoderKL.__init__` takes `scaling_factor` only and registers `force_upcast=False`, so a
model *constructed* from a base's sizes forgets the rest; `pipeline_config` is what `asymmetric_from_base` records
on the new model's config (hence in its config.json). Loading keeps them: diffusers 0.42.1's `from_pretrained`
re-registers the config.json keys `__init__` does not take (tests/test_families.py pins this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PIPELINE_KEYS", "LatentTransform", "pipeline_config"]

PIPELINE_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")
"""The VAE config keys diffusers pipelines read."""


def pipeline_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `PIPELINE_KEYS` entries of `config` (a VAE's `config`, or the contents of its config.json)."""
    return {k: config[k] for k in PIPELINE_KEYS if k in config}


@dataclass(frozen=True)
class LatentTransform:
    """The map between the diffusion model's latents and the VAE's own (see the module docstring)."""

    scaling_factor: float
    shift_factor: float = 0.0
    latents_mean: tuple[float, ...] | None = None
    """Per-channel mean; used (with `latents_std`) instead of `shift_factor`, as SDXL's pipelines do."""
    latents_std: tuple[float, ...] | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> LatentTransform:
        """The transform a VAE config (or config.json contents) asks pipelines for."""
        mean, std = config.get("latents_mean"), config.get("latents_std")
        use_stats = mean is not None and std is not None
        return cls(
            scaling_factor=float(config.get("scaling_factor", 0.18215)),
            shift_factor=float(config.get("shift_factor") or 0.0),
            latents_mean=tuple(float(v) for v in mean) if use_stats else None,
            latents_std=tuple(float(v) for v in std) if use_stats else None,
        )

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

        return column(self.latents_mean or ()), column(self.latents_std or ())

    def to_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """The diffusion model's latents in the VAE's own space: what `vae.decode` takes."""
        if self.latents_mean is not None:
            mean, std = self._stats(latents)
            return latents * std / self.scaling_factor + mean
        return latents / self.scaling_factor + self.shift_factor

    def from_vae(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_vae`: the VAE's latents as the diffusion model sees them."""
        if self.latents_mean is not None:
            mean, std = self._stats(z)
            return (z - mean) * self.scaling_factor / std
        return (z - self.shift_factor) * self.scaling_factor

    def describe(self) -> str:
        """The formula, with this VAE's values, as text for model cards."""
        if self.latents_mean is not None:
            return f"latent * latents_std / {self.scaling_factor} + latents_mean (per-channel values in config.json)"
        if self.shift_factor:
            return f"latent / {self.scaling_factor} + {self.shift_factor}"
        return f"latent / {self.scaling_factor}"
