"""The diffusers KL VAE families: their latent interface, inpainting pipelines and hub repositories.

An asymmetric decoder is built on any `AutoencoderKL` (see `asymvae.model.build`); the family only matters
for what surrounds the VAE: how pipelines transform latents before decoding (`asymvae.model.latent_space`),
which inpainting pipelines run it (`asymvae.inpaint.kinds`), where the released weights live, and the shape of the
tiny stand-in bases the offline demos fit (`ModelConfig.scratch_family`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asymvae.model.hub import (
    FLUX_DEV,
    FLUX_FILL,
    FLUX_SCHNELL,
    SD3,
    SD15,
    SD15_INPAINTING,
    SD35,
    SDXL,
    SDXL_INPAINTING,
)

__all__ = ["FAMILIES", "Family", "HubRepo", "family_of"]


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face hub repository in diffusers layout."""

    id: str
    what: str
    """What it holds, for docs and cards."""
    gated: bool = False
    """True when the hub asks you to accept a licence first: then downloads need a token (`HF_TOKEN` or
    `hf auth login`) of an account that accepted it."""


@dataclass(frozen=True)
class Family:
    """One family of diffusers KL VAEs, by the values of the released VAE's config.json."""

    name: str
    title: str
    latent_channels: int
    quant_convs: bool
    """False: `use_quant_conv=False, use_post_quant_conv=False` (the asymmetric model carries identity convs)."""
    scaling_factor: float
    shift_factor: float | None
    force_upcast: bool
    """As diffusers loads the released VAE (the key defaults to true where config.json leaves it out)."""
    repos: tuple[HubRepo, ...]
    """Where the weights live: the VAE is the repo's `vae` subfolder."""

    def vae_kwargs(self) -> dict[str, Any]:
        """`AutoencoderKL` arguments that give a VAE this family's latent interface."""
        return {
            "latent_channels": self.latent_channels,
            "use_quant_conv": self.quant_convs,
            "use_post_quant_conv": self.quant_convs,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "force_upcast": self.force_upcast,
        }

    def matches(self, config: Mapping[str, Any]) -> bool:
        """True when a VAE config has this family's latent channels, scaling and shift factor."""
        shift = config.get("shift_factor") or None
        return (
            config.get("latent_channels") == self.latent_channels
            and abs(float(config.get("scaling_factor", 0.18215)) - self.scaling_factor) < 1e-9
            and (shift is None) == (self.shift_factor is None)
            and (shift is None or abs(float(shift) - float(self.shift_factor or 0.0)) < 1e-9)
        )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="sd",
            title="Stable Diffusion 1.x/2.x",
            latent_channels=4,
            quant_convs=True,
            scaling_factor=0.18215,
            shift_factor=None,
            force_upcast=True,
            repos=(
                HubRepo(SD15, "SD 1.5 (the runwayml repos were removed)"),
                HubRepo(SD15_INPAINTING, "SD 1.5 inpainting pipeline"),
            ),
        ),
        Family(
            name="sdxl",
            title="Stable Diffusion XL",
            latent_channels=4,
            quant_convs=True,
            scaling_factor=0.13025,
            shift_factor=None,
            force_upcast=True,
            repos=(
                HubRepo(SDXL, "SDXL base 1.0"),
                HubRepo(SDXL_INPAINTING, "SDXL inpainting pipeline"),
            ),
        ),
        Family(
            name="sd3",
            title="Stable Diffusion 3 / 3.5",
            latent_channels=16,
            quant_convs=False,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            force_upcast=True,
            repos=(
                HubRepo(SD3, "SD3 medium (also its inpainting)", True),
                HubRepo(SD35, "SD3.5 large (also its inpainting)", True),
            ),
        ),
        Family(
            name="flux",
            title="FLUX.1",
            latent_channels=16,
            quant_convs=False,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            force_upcast=True,
            repos=(
                HubRepo(FLUX_DEV, "FLUX.1 [dev] (also FluxInpaintPipeline)", True),
                HubRepo(FLUX_SCHNELL, "FLUX.1 [schnell], Apache-2.0 (also FluxInpaintPipeline)"),
                HubRepo(FLUX_FILL, "FLUX.1 Fill [dev] (FluxFillPipeline)", True),
            ),
        ),
    )
}


def family_of(config: Mapping[str, Any]) -> Family | None:
    """The family whose latent interface a VAE config has (SD and SDXL differ in scaling factor only), or None."""
    return next((f for f in FAMILIES.values() if f.matches(config)), None)
