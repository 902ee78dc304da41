"""Hugging Face hub ids: the ones that moved.

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
