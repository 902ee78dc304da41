"""`asymvae inpaint --vae MODEL --pipeline PIPELINE_DIR --image IMG --mask MASK --prompt ... --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from asymvae.commands.options import add_command, from_args
from asymvae.inpaint.options import InpaintOptions


def run(args: argparse.Namespace) -> int:
    """Inpaint with the trained VAE and save one PNG per generated image."""
    from asymvae.inpaint import inpaint, load_pipeline

    options = from_args(InpaintOptions, args)
    request = options.request()
    pipe = load_pipeline(options.vae, options.pipeline, device=options.device, speed=options.decode_speed)
    pipe.set_progress_bar_config(disable=True)
    images = inpaint(pipe, request)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    n = request.num_images_per_prompt
    for i, image in enumerate(images):
        path = out / f"prompt{i // n}_{i % n}.png"
        image.save(path)
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `inpaint` to the command line."""
    add_command(
        sub, "inpaint", InpaintOptions, run, description=__doc__,
        help="inpaint with the trained VAE inside a diffusers pipeline (SD, SDXL, SD3, FLUX)",
    )  # fmt: skip
