"""Inpaint with a trained asymmetric VAE in diffusers' pipelines: SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1 inpaint and fill.

Only the SD 1.x/2.x inpaint pipeline hands `image` and `mask` to `vae.decode`; the others decode blind. `inpaint`
runs any of them and decodes with the unmasked image (see `asymvae.inpaint.run`):

    from asymvae.inpaint import InpaintRequest, inpaint, load_pipeline
    pipe = load_pipeline("work_dirs/demo_flux/step400", "FLUX.1-Fill-dev")  # any folder of a kind in KINDS
    images = inpaint(pipe, InpaintRequest(["a cat"], image, mask, num_images_per_prompt=2))
"""

import importlib
from typing import Any

# Each name loads its module on first use (PEP 562), so that `asymvae inpaint --help`, which reads only
# `asymvae.inpaint.options`, does not import torch and diffusers.
_HOMES = {
    "BatchedConditionVAE": "condition",
    "batched_condition_vae": "condition",
    "repeat_to_batch": "condition",
    "KINDS": "kinds",
    "PipelineKind": "kinds",
    "folder_kind": "kinds",
    "pipeline_kind": "kinds",
    "InpaintOptions": "options",
    "InpaintInputError": "request",
    "InpaintRequest": "request",
    "read_request": "request",
    "decode_pipeline_latents": "run",
    "inpaint": "run",
    "load_pipeline": "run",
    "output_size": "run",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
