"""The diffusers inpainting pipelines asymvae runs, and how each hands back its latents.

Only the SD 1.x/2.x pipeline passes `image=`/`mask=` to `vae.decode`; SDXL's, SD3's and FLUX's inpaint and fill
pipelines do not, so an asymmetric decoder inside them decodes blind. asymvae therefore runs every kind with
`output_type="latent"` and decodes itself (`asymvae.inpaint.run`): each kind says how to turn what the pipeline
returns into the VAE's latents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymvae.inpaint.request import InpaintInputError

__all__ = ["KINDS", "PipelineKind", "folder_kind", "pipeline_kind"]


@dataclass(frozen=True)
class PipelineKind:
    """One diffusers inpainting pipeline class."""

    pipeline: str
    """The diffusers class asymvae runs."""
    family: str
    """The VAE family (`asymvae.model.family.FAMILIES`) it belongs to."""
    loads_from: tuple[str, ...]
    """`model_index.json` class names of folders it is built from (a text-to-image folder works too)."""
    packed_latents: bool = False
    """FLUX: `output_type="latent"` returns 2x2 patches packed into a sequence, unpacked before decoding."""

    def size_multiple(self, pipe: Any) -> int:
        """What height and width must be multiples of: the VAE's factor, times the transformer's patch (SD3) or
        FLUX's 2x2 packing."""
        patch = 2 if self.packed_latents else int(getattr(pipe, "patch_size", 1) or 1)
        return int(pipe.vae_scale_factor) * patch

    def vae_latents(self, pipe: Any, latents: Any, height: int, width: int) -> Any:
        """The pipeline's `output_type="latent"` result as (B, C, h, w) latents (still scaled)."""
        if self.packed_latents:
            return type(pipe)._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        return latents


KINDS: dict[str, PipelineKind] = {
    k.pipeline: k
    for k in (
        PipelineKind(
            "StableDiffusionInpaintPipeline", "sd", ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline")
        ),
        PipelineKind(
            "StableDiffusionXLInpaintPipeline",
            "sdxl",
            ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
        ),
        PipelineKind(
            "StableDiffusion3InpaintPipeline",
            "sd3",
            ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
        ),
        PipelineKind(
            "FluxInpaintPipeline",
            "flux",
            ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
            packed_latents=True,
        ),
        PipelineKind("FluxFillPipeline", "flux", ("FluxFillPipeline",), packed_latents=True),
    )
}


def _supported() -> str:
    return ", ".join(sorted({name for k in KINDS.values() for name in k.loads_from}))


def pipeline_kind(pipe: Any) -> PipelineKind:
    """The kind of a pipeline object (by its class), or InpaintInputError."""
    name = type(pipe).__name__
    if name not in KINDS:
        raise InpaintInputError(f"a {name} is not an inpainting pipeline asymvae runs; use one of {', '.join(KINDS)}")
    return KINDS[name]


def folder_kind(folder: Path) -> PipelineKind:
    """The kind to build from a pipeline folder, by the class its `model_index.json` names, or InpaintInputError."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise InpaintInputError(
            f"--pipeline {folder}: no model_index.json there; give a diffusers pipeline folder (save_pretrained or "
            "a hub download) of one of: " + _supported()
        )
    try:
        name = json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError, TypeError) as e:
        raise InpaintInputError(f"--pipeline {folder}: {index.name} is not a diffusers model index ({e!r})") from e
    for kind in KINDS.values():
        if name in kind.loads_from:
            return kind
    raise InpaintInputError(f"--pipeline {folder} holds a {name}; asymvae inpaints with folders of: {_supported()}")
