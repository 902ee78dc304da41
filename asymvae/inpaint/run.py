"""Run a trained asymmetric VAE inside a diffusers inpainting pipeline, its decoder seeing the unmasked image.

`inpaint(pipe, request)` runs the pipeline with `output_type="latent"` and decodes those latents itself
(`decode_pipeline_latents`), the same way for every kind in `asymvae.inpaint.kinds.KINDS`:

1. the kind's latents as (B, C, h, w) (FLUX: unpacked from its 2x2 patch sequence);
2. the family's latent transform from the VAE's config (`asymvae.model.latent_space.LatentTransform`:
   `latents / scaling_factor + shift_factor` for SD3 and FLUX). diffusers 0.42.1's own SD3 inpaint pipeline
   leaves `+ shift_factor` out of its decode (huggingface/diffusers#13611, issue 1); this path does not;
3. `decode_latents(vae, z, image=, mask=)` with the pipeline's own preprocessing of the image and mask (resized to
   the output size, mask binarised, 1 = hole), repeated to the latent batch (prompts x images per prompt); in
   float32 when the VAE is float16 and its config asks for `force_upcast`; in tiles when the request asks;
4. what the pipeline does with decoded images before returning them (the SD safety checker when the pipeline
   has one, SDXL's watermark when installed), then the pipeline's own postprocessing to PIL.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from asymvae.inpaint.condition import batched_condition_vae, repeat_to_batch
from asymvae.inpaint.kinds import folder_kind, pipeline_kind
from asymvae.inpaint.request import InpaintInputError, InpaintRequest
from asymvae.model.decode import TileConfig, decode_latents, upsampling_factor
from asymvae.model.decode_speed import DecodeSpeed, apply_decode_speed
from asymvae.model.latent_space import LatentTransform

log = logging.getLogger(__name__)

__all__ = ["decode_pipeline_latents", "inpaint", "load_pipeline", "output_size"]


def _latent_space(config: Any) -> str:
    t = LatentTransform.of(config)
    return f"{config.get('latent_channels')}-channel latents ({t.describe()})"


def _check_latent_space(vae: diffusers.AsymmetricAutoencoderKL, folder: Path) -> None:
    """The trained VAE must decode the latent space the pipeline's own VAE encodes to."""
    own = folder / "vae" / "config.json"
    if not own.is_file():
        return
    theirs = json.loads(own.read_text())
    same_channels = theirs.get("latent_channels", 4) == vae.config.latent_channels
    if not same_channels or LatentTransform.of(theirs) != LatentTransform.of(vae.config):
        raise InpaintInputError(
            f"--vae decodes {_latent_space(vae.config)} but the VAE of --pipeline {folder} makes "
            f"{_latent_space(theirs)}: train the decoder on that pipeline's VAE (`asymvae configs` lists a preset "
            "per family)"
        )


def load_pipeline(
    vae: str | Path,
    pipeline_dir: str | Path,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    speed: DecodeSpeed | None = None,
) -> Any:
    """The inpainting pipeline for `pipeline_dir` (its kind picked from its model_index.json, e.g. FluxPipeline ->
    FluxInpaintPipeline) with the trained VAE at `vae` in place of its own; `speed`: the VAE's decode speed
    settings (`asymvae.model.decode_speed`; default eager)."""
    pdir = Path(pipeline_dir).expanduser()
    kind = folder_kind(pdir)
    model = batched_condition_vae(vae)
    _check_latent_space(model, pdir)
    try:
        pipe = getattr(diffusers, kind.pipeline).from_pretrained(pdir, vae=model, dtype=dtype)
    except Exception as e:
        raise InpaintInputError(f"--pipeline {pdir}: cannot load it as a {kind.pipeline}: {e}") from e
    pipe = pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if speed is not None:
        apply_decode_speed(pipe.vae, speed)
    return pipe


def output_size(request: InpaintRequest, multiple: int) -> tuple[int, int]:
    """(height, width) of the output: the request's, or the image's rounded down to `multiple`; checked."""
    height = request.height if request.height is not None else request.image.height // multiple * multiple
    width = request.width if request.width is not None else request.image.width // multiple * multiple
    if min(height, width) < multiple or height % multiple or width % multiple:
        raise InpaintInputError(
            f"output size {width}x{height} (image {request.image.width}x{request.image.height}): this pipeline "
            f"needs a width and height that are positive multiples of {multiple}; pass --width/--height"
        )
    return height, width


@contextlib.contextmanager
def _decoding_dtype(vae: Any) -> Iterator[torch.dtype]:
    """float32 for a float16 VAE whose config asks for `force_upcast` (as SDXL's pipelines do), else its dtype."""
    original = vae.dtype
    upcast = original == torch.float16 and bool(vae.config.get("force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(original)


def decode_pipeline_latents(
    pipe: Any,
    latents: torch.Tensor,
    image: Image.Image,
    mask: Image.Image,
    height: int,
    width: int,
    tile: TileConfig | None = None,
) -> torch.Tensor:
    """Decode what `pipe(..., output_type="latent", height=height, width=width)` returned with `pipe.vae`,
    conditioned on the `image` and `mask` given to the pipeline (PIL; white = hole). Pixels on about [-1, 1]."""
    kind = pipeline_kind(pipe)
    vae = pipe.vae
    z = LatentTransform.of(vae.config).to_vae(kind.vae_latents(pipe, latents, height, width).float())
    cond_image = pipe.image_processor.preprocess(image, height=height, width=width)
    cond_mask = pipe.mask_processor.preprocess(mask, height=height, width=width)
    with _decoding_dtype(vae) as dtype, torch.no_grad():
        place = {"device": vae.device, "dtype": dtype}
        return decode_latents(
            vae,
            z.to(**place),
            repeat_to_batch(cond_image, z.shape[0]).to(**place),
            repeat_to_batch(cond_mask, z.shape[0]).to(**place),
            tile,
        )


def _to_pil(pipe: Any, sample: torch.Tensor) -> list[Image.Image]:
    """What the pipeline does between its decode and its return: SD's safety checker, SDXL's watermark, postprocess."""
    flagged = None
    if getattr(pipe, "safety_checker", None) is not None:
        sample, flagged = pipe.run_safety_checker(sample, sample.device, sample.dtype)
    if getattr(pipe, "watermark", None) is not None:
        sample = pipe.watermark.apply_watermark(sample)
    denormalize = None if flagged is None else [not f for f in flagged]
    return pipe.image_processor.postprocess(sample, output_type="pil", do_denormalize=denormalize)


def inpaint(pipe: Any, request: InpaintRequest) -> list[Image.Image]:
    """Run the pipeline: `len(prompts) * num_images_per_prompt` images, prompt-major, decoded with the image and
    mask (see the module docstring)."""
    kind = pipeline_kind(pipe)
    height, width = output_size(request, kind.size_multiple(pipe))
    if request.tile is not None:
        try:
            request.tile.in_latents(upsampling_factor(pipe.vae))
        except ValueError as e:
            raise InpaintInputError(f"--tile: {e}") from e
    options = {"strength": request.strength, "guidance_scale": request.guidance_scale}
    latents = pipe(
        request.prompts,
        image=request.image,
        mask_image=request.mask,
        num_images_per_prompt=request.num_images_per_prompt,
        num_inference_steps=request.steps,
        height=height,
        width=width,
        generator=torch.Generator(pipe.device).manual_seed(request.seed),
        output_type="latent",
        **{k: v for k, v in options.items() if v is not None},
    ).images
    sample = decode_pipeline_latents(pipe, latents, request.image, request.mask, height, width, request.tile)
    return _to_pil(pipe, sample)
