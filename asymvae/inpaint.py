"""Run a trained asymmetric VAE inside diffusers' `StableDiffusionInpaintPipeline`, batched prompts included.

The stock pipeline (diffusers 0.42.1) passes the preprocessed image and mask to `vae.decode` at the batch
size the user gave (one image), while the latents have `len(prompts) * num_images_per_prompt` rows. The
asymmetric decoder looks up its mask-branch features by tensor shape, so the batch mismatch ends in
`KeyError: '(2, 64, 32, 32)'`. `BatchedConditionVAE` repeats image and mask up to the latent batch before
decoding, the same way (`Tensor.repeat`, i.e. tiled) the pipeline itself repeats the mask and the masked-image
latents it feeds the UNet, so each latent is decoded with the condition it was denoised with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AsymmetricAutoencoderKL
from PIL import Image

from asymvae.errors import UserError
from asymvae.model.files import load_vae

log = logging.getLogger(__name__)

__all__ = [
    "BatchedConditionVAE",
    "InpaintInputError",
    "InpaintRequest",
    "batched_condition_vae",
    "inpaint",
    "load_pipeline",
    "repeat_to_batch",
]


class InpaintInputError(UserError, ValueError):
    """An inpainting input (image, mask, pipeline folder) that cannot be used; the message says which and why."""


def repeat_to_batch(t: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """`t` tiled along dim 0 to `batch` rows (as the pipeline tiles masks); None stays None."""
    if t is None or t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ValueError(f"cannot spread a condition of batch {t.shape[0]} over {batch} latents")
    return t.repeat(batch // t.shape[0], *([1] * (t.dim() - 1)))


class BatchedConditionVAE(AsymmetricAutoencoderKL):
    """`AsymmetricAutoencoderKL` whose `decode` repeats `image`/`mask` to the latent batch size first.

    Weights and config are the parent's; only `decode` differs. Load with `batched_condition_vae(path)`.
    """

    def decode(
        self,
        z: torch.Tensor,
        generator: torch.Generator | None = None,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """`AsymmetricAutoencoderKL.decode` with the condition repeated to `z`'s batch size."""
        n = z.shape[0]
        return super().decode(
            z,
            generator=generator,
            image=repeat_to_batch(image, n),
            mask=repeat_to_batch(mask, n),
            return_dict=return_dict,
        )


def batched_condition_vae(model: str | Path | AsymmetricAutoencoderKL) -> BatchedConditionVAE:
    """A `BatchedConditionVAE` from a training export / diffusers folder, or from a loaded model (weights copied)."""
    if isinstance(model, AsymmetricAutoencoderKL):
        vae = BatchedConditionVAE.from_config(model.config)
        vae.load_state_dict(model.state_dict())
        return vae.to(device=model.device, dtype=model.dtype).eval()
    return load_vae(model, require=AsymmetricAutoencoderKL, load_as=BatchedConditionVAE)


def load_pipeline(vae: str | Path, pipeline_dir: str | Path, device: str | None = None, dtype=torch.float32):
    """`StableDiffusionInpaintPipeline` from `pipeline_dir` with the trained VAE at `vae` in place of its own."""
    from diffusers import StableDiffusionInpaintPipeline

    pdir = Path(pipeline_dir).expanduser()
    if not (pdir / "model_index.json").is_file():
        raise InpaintInputError(
            f"--pipeline {pdir}: no model_index.json there; give a StableDiffusionInpaintPipeline folder "
            "(e.g. a local copy of stable-diffusion-inpainting, written by save_pretrained)"
        )
    model = batched_condition_vae(vae)
    try:
        pipe = StableDiffusionInpaintPipeline.from_pretrained(pdir, vae=model, dtype=dtype)
    except Exception as e:
        raise InpaintInputError(f"--pipeline {pdir}: cannot load it as a StableDiffusionInpaintPipeline: {e}") from e
    unet_in = pipe.unet.config.in_channels
    if unet_in != 2 * model.config.latent_channels + 1:
        raise InpaintInputError(
            f"the pipeline's UNet takes {unet_in} channels, but an inpainting UNet for this VAE's "
            f"{model.config.latent_channels}-channel latents takes {2 * model.config.latent_channels + 1}"
        )
    return pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class InpaintRequest:
    """One call of the pipeline."""

    prompts: list[str]
    image: Image.Image
    mask: Image.Image
    """White (255) = hole to generate, black = keep (diffusers' convention)."""
    num_images_per_prompt: int = 1
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    height: int | None = None
    width: int | None = None


def _open(path: str | Path, mode: str, what: str) -> Image.Image:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InpaintInputError(f"--{what} {p}: no such file")
    try:
        with Image.open(p) as img:
            return img.convert(mode)
    except Exception as e:
        raise InpaintInputError(f"--{what} {p}: not a readable image ({e})") from e


def read_request(
    image: str | Path, mask: str | Path, prompts: list[str], **options: int | float | None
) -> InpaintRequest:
    """An `InpaintRequest` from image files; size defaults to the image's, rounded down to a multiple of 8."""
    img = _open(image, "RGB", "image")
    msk = _open(mask, "L", "mask")
    if img.size != msk.size:
        raise InpaintInputError(f"--image is {img.size[0]}x{img.size[1]} but --mask is {msk.size[0]}x{msk.size[1]}")
    if not prompts:
        raise InpaintInputError("give at least one --prompt")
    kwargs = {k: v for k, v in options.items() if v is not None}
    kwargs.setdefault("width", img.size[0] // 8 * 8)
    kwargs.setdefault("height", img.size[1] // 8 * 8)
    if min(kwargs["width"], kwargs["height"]) < 8:
        raise InpaintInputError(f"--image {image} is smaller than 8 px")
    return InpaintRequest(prompts=list(prompts), image=img, mask=msk, **kwargs)


def inpaint(pipe, request: InpaintRequest) -> list[Image.Image]:
    """Run the pipeline: `len(prompts) * num_images_per_prompt` images, prompt-major."""
    result = pipe(
        request.prompts,
        image=request.image,
        mask_image=request.mask,
        num_images_per_prompt=request.num_images_per_prompt,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        height=request.height,
        width=request.width,
        generator=torch.Generator(pipe.device).manual_seed(request.seed),
        output_type="pil",
    )
    return list(result.images)
