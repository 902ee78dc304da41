"""`asymvae inpaint --vae MODEL --pipeline SD_INPAINT_DIR --image IMG --mask MASK --prompt ... --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Inpaint with the trained VAE and save one PNG per generated image."""
    from asymvae.inpaint import inpaint, load_pipeline, read_request

    request = read_request(
        args.image,
        args.mask,
        args.prompt,
        num_images_per_prompt=args.num_images_per_prompt,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        height=args.height,
        width=args.width,
    )
    pipe = load_pipeline(args.vae, args.pipeline, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    images = inpaint(pipe, request)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = request.num_images_per_prompt
    for i, image in enumerate(images):
        path = out / f"prompt{i // n}_{i % n}.png"
        image.save(path)
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `inpaint` to the command line."""
    p = sub.add_parser("inpaint", help="inpaint with the trained VAE inside StableDiffusionInpaintPipeline")
    p.add_argument("--vae", required=True, help="the trained asymmetric VAE (export or diffusers folder)")
    p.add_argument("--pipeline", required=True, help="a StableDiffusionInpaintPipeline folder (save_pretrained)")
    p.add_argument("--image", required=True, help="the image to edit")
    p.add_argument("--mask", required=True, help="the mask image: white = hole to generate, black = keep")
    p.add_argument("--prompt", required=True, action="append", help="a prompt; repeat for a batch of prompts")
    p.add_argument("--num-images-per-prompt", type=int, default=1, help="images per prompt (default: 1)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps (default: 30)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (default: 7.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--height", type=int, help="output height (default: the image's, rounded down to 8)")
    p.add_argument("--width", type=int, help="output width (default: the image's, rounded down to 8)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--out", required=True, help="folder for the PNGs (prompt<i>_<j>.png)")
    p.set_defaults(func=run)
