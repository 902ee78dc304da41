"""`asymvae inpaint --vae MODEL --pipeline PIPELINE_DIR --image IMG --mask MASK --prompt ... --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Inpaint with the trained VAE and save one PNG per generated image."""
    from asymvae.inpaint import InpaintInputError, inpaint, load_pipeline, read_request
    from asymvae.model.decode import TileConfig

    try:
        tile = None if args.tile is None else TileConfig(size=args.tile, overlap=args.tile_overlap)
    except ValueError as e:
        raise InpaintInputError(f"--tile {args.tile} --tile-overlap {args.tile_overlap}: {e}") from e
    request = read_request(
        args.image,
        args.mask,
        args.prompt,
        num_images_per_prompt=args.num_images_per_prompt,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        strength=args.strength,
        seed=args.seed,
        height=args.height,
        width=args.width,
        tile=tile,
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
    from asymvae.inpaint import KINDS

    kinds = ", ".join(KINDS)
    p = sub.add_parser("inpaint", help="inpaint with the trained VAE inside a diffusers inpainting pipeline")
    p.add_argument("--vae", required=True, help="the trained asymmetric VAE (export or diffusers folder)")
    p.add_argument(
        "--pipeline",
        required=True,
        help=f"a diffusers pipeline folder (save_pretrained or hub download) run as one of: {kinds}; "
        "a text-to-image folder of the family works too",
    )
    p.add_argument("--image", required=True, help="the image to edit")
    p.add_argument("--mask", required=True, help="the mask image: white = hole to generate, black = keep")
    p.add_argument("--prompt", required=True, action="append", help="a prompt; repeat for a batch of prompts")
    p.add_argument("--num-images-per-prompt", type=int, default=1, help="images per prompt (default: 1)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps (default: 30)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    p.add_argument("--strength", type=float, help="re-noising strength, 1.0 = fully (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--height", type=int, help="output height (default: the image's, rounded down to 8 or 16)")
    p.add_argument("--width", type=int, help="output width (default: the image's, rounded down to 8 or 16)")
    p.add_argument("--tile", type=int, help="decode in tiles of this many px (large images; default: whole)")
    p.add_argument("--tile-overlap", type=int, default=128, help="px shared by neighbouring tiles (default: 128)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--out", required=True, help="folder for the PNGs (prompt<i>_<j>.png)")
    p.set_defaults(func=run)
