"""Inpaint with a trained asymmetric VAE in diffusers' pipelines: SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1 inpaint and fill.

Only the SD 1.x/2.x inpaint pipeline hands `image` and `mask` to `vae.decode`; the others decode blind. `inpaint`
runs any of them and decodes with the unmasked image (see `asymvae.inpaint.run`):

    from asymvae.inpaint import InpaintRequest, inpaint, load_pipeline
    pipe = load_pipeline("work_dirs/demo_flux/step400", "FLUX.1-Fill-dev")  # any folder of a kind in KINDS
    images = inpaint(pipe, InpaintRequest(["a cat"], image, mask, num_images_per_prompt=2))
"""

from asymvae.inpaint.condition import BatchedConditionVAE, batched_condition_vae, repeat_to_batch
from asymvae.inpaint.kinds import KINDS, PipelineKind, folder_kind, pipeline_kind
from asymvae.inpaint.options import InpaintOptions
from asymvae.inpaint.request import InpaintInputError, InpaintRequest, read_request
from asymvae.inpaint.run import decode_pipeline_latents, inpaint, load_pipeline, output_size

__all__ = [
    "KINDS",
    "BatchedConditionVAE",
    "InpaintInputError",
    "InpaintOptions",
    "InpaintRequest",
    "PipelineKind",
    "batched_condition_vae",
    "decode_pipeline_latents",
    "folder_kind",
    "inpaint",
    "load_pipeline",
    "output_size",
    "pipeline_kind",
    "read_request",
    "repeat_to_batch",
]
