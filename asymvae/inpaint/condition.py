"""An `AsymmetricAutoencoderKL` that the stock SD 1.x inpaint pipeline can call with batched prompts.

`StableDiffusionInpaintPipeline` (diffusers 0.42.1) is the one pipeline that passes the preprocessed image and mask
to `vae.decode`, at the batch size the user gave (one image), while the latents have `len(prompts) *
num_images_per_prompt` rows. The asymmetric decoder looks up its mask-branch features by tensor shape, so the
batch mismatch ends in `KeyError: '(2, 64, 32, 32)'`. `BatchedConditionVAE` repeats image and mask up to the latent
batch before decoding, the same way (`Tensor.repeat`, i.e. tiled) the pipeline itself repeats the mask and the
masked-image latents it feeds the UNet, so each latent is decoded with the condition it was denoised with.
`asymvae.inpaint.inpaint` decodes itself (for every pipeline kind) and needs none of this; it is for users who
call that pipeline directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.model.files import load_vae

__all__ = ["BatchedConditionVAE", "batched_condition_vae", "repeat_to_batch"]


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
