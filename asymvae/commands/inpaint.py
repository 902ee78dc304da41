"""`asymvae inpaint --vae MODEL --pipeline PIPELINE_DIR --image IMG --mask MASK --prompt ... --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from asymvae.commands.options import add_command, from_args
from asymvae.inpaint.options import InpaintOptions


def run(args: argparse.Namespace) -> int:
    """Inpaint with the trained VAE and save one PNG per generated image (never over a file asymvae did not
    write)."""
    from asymvae.inpaint import inpaint, load_pipeline
    from asymvae.inpaint.outputs import check_outputs, output_paths, save_outputs

    options = from_args(InpaintOptions, args)
    request = options.request()
    paths = output_paths(Path(options.out), len(request.prompts), request.num_images_per_prompt)
    check_outputs(paths)  # before the minutes of loading and generating
    pipe = load_pipeline(options.vae, options.pipeline, device=options.device, speed=options.decode_speed)
    pipe.set_progress_bar_config(disable=True)
    save_outputs(inpaint(pipe, request), paths)
    for path in paths:
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `inpaint` to the command line."""
    add_command(
        sub, "inpaint", InpaintOptions, run, description=__doc__,
        help="inpaint with the trained VAE inside a diffusers pipeline (SD, SDXL, SD3, FLUX)",
    )  # fmt: skip
