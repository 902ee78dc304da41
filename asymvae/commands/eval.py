"""`asymvae eval MODEL --data SOURCE --baseline BASE_VAE`: score the asymmetric decoder against the baseline's."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the table."""
    from asymvae.config import ConfigError
    from asymvae.evaluation.run import EvalConfig, evaluate

    try:
        cfg = EvalConfig(
            model=args.model,
            baseline=args.baseline,
            data=args.data,
            out=args.out,
            split=args.split,
            resolution=args.resolution,
            max_images=args.max_images,
            batch_size=args.batch_size,
            lpips=args.lpips,
            lpips_net=args.lpips_net,
            fid=args.fid,
            grid_samples=args.grid_samples,
            tile=args.tile,
            tile_overlap=args.tile_overlap,
            device=args.device,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    result = evaluate(cfg)
    print((result.files["markdown"]).read_text(), end="")
    print("\nWrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` to the command line."""
    p = sub.add_parser("eval", help="score a trained asymmetric decoder against the baseline VAE's decoder")
    p.add_argument("model", help="training export (OUTPUT/step<N>, holding vae/) or a diffusers VAE folder")
    p.add_argument(
        "--data",
        required=True,
        help="held-out images: a prepared dataset (asymvae prepare's folder, manifest or s3:// prefix: its val "
        "split and stored masks), or a folder, dataset, or e.g. builtin:demo?seed=1",
    )
    p.add_argument("--baseline", required=True, help="the baseline VAE (export or diffusers folder)")
    p.add_argument("--out", help="report folder (default: MODEL/eval)")
    p.add_argument("--split", default="validation", help="dataset split / split subfolder (default: validation)")
    p.add_argument("--resolution", type=int, default=256, help="centre-crop side in px (default: 256)")
    p.add_argument("--max-images", type=int, help="score only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded at once (default: 8)")
    p.add_argument(
        "--lpips",
        choices=("shift_tolerant", "standard", "off"),
        default="shift_tolerant",
        help="LPIPS variant: ST-LPIPS (offline, default), standard (needs torchvision weights), off",
    )
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default: alex)")
    p.add_argument(
        "--no-fid", dest="fid", action="store_false", help="skip FID even when pytorch-fid and its weights exist"
    )
    p.add_argument("--grid-samples", type=int, default=4, help="rows of grid.png (default: 4)")
    p.add_argument("--tile", type=int, help="decode in tiles of this many px (large images; default: whole)")
    p.add_argument("--tile-overlap", type=int, default=128, help="px shared by neighbouring tiles (default: 128)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    p.set_defaults(func=run)
