"""Hugging Face hub ids of the base models, and the ones that moved.

`runwayml/stable-diffusion-v1-5` and `runwayml/stable-diffusion-inpainting` were taken off the hub in 2024;
their content lives on under the `stable-diffusion-v1-5` organisation. Configs and commands that still name
the old ids keep working: the id is mapped, with one warning line that names the new one.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
"""Stable Diffusion 1.5 (its VAE is subfolder `vae`)."""
SD15_INPAINTING = "stable-diffusion-v1-5/stable-diffusion-inpainting"
"""Stable Diffusion 1.5 inpainting."""
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
"""SDXL base 1.0 (its VAE is subfolder `vae`)."""
SDXL_INPAINTING = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
"""SDXL inpainting 0.1."""
SD3 = "stabilityai/stable-diffusion-3-medium-diffusers"
"""SD3 medium (gated)."""
SD35 = "stabilityai/stable-diffusion-3.5-large"
"""SD3.5 large (gated)."""
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
"""FLUX.1 [dev] (gated)."""
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
"""FLUX.1 [schnell] (Apache-2.0, open)."""
FLUX_FILL = "black-forest-labs/FLUX.1-Fill-dev"
"""FLUX.1 Fill [dev] (gated)."""

MOVED = {
    "runwayml/stable-diffusion-v1-5": SD15,
    "runwayml/stable-diffusion-inpainting": SD15_INPAINTING,
}
"""Removed hub ids and where their content is now."""


def current_hub_id(repo_id: str) -> str:
    """`repo_id`, or where it moved (saying so in one warning line)."""
    moved = MOVED.get(repo_id.strip().rstrip("/"))
    if moved is None:
        return repo_id
    log.warning("%s was removed from the Hugging Face hub in 2024; using %s instead", repo_id, moved)
    return moved
