"""`asymvae export MODEL --format diffusers|onnx|triton --out DIR`: package a trained model, with a model card."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Export and say where it went."""
    from asymvae.export.run import ExportConfig, export_model

    cfg = ExportConfig(
        model=args.model,
        format=args.format,
        out=args.out,
        name=args.name,
        eval=args.eval,
        opset=args.opset,
        max_batch_size=args.max_batch_size,
        force=args.force,
    )
    result = export_model(cfg)
    print(f"Exported {args.model} as {args.format} to {result.path}")
    for check in result.onnx_checks:
        print(
            f"  ONNX vs PyTorch, batch {check['batch']}, latent {check['latent_height']}x{check['latent_width']}: "
            f"max abs error {check['max_abs_error']:.2e}"
        )
    for name in result.files:
        print(f"  {result.path / name}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export` to the command line."""
    from asymvae.export.onnx import DEFAULT_OPSET
    from asymvae.export.run import FORMATS
    from asymvae.export.triton import DEFAULT_MAX_BATCH

    p = sub.add_parser("export", help="export a trained model as a diffusers folder, ONNX or a Triton model")
    p.add_argument("model", help="training export (OUTPUT/step<N>, holding vae/) or a diffusers VAE folder")
    # Checked by ExportConfig rather than argparse choices, so a wrong format is a user error like the others.
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, help="target folder (triton: the model repository root)")
    p.add_argument("--name", default="asymvae_decoder", help="model name (Triton model folder; card title)")
    p.add_argument("--eval", help="metrics.json from `asymvae eval`, put into the model card")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH, help=f"Triton max_batch_size ({DEFAULT_MAX_BATCH})"
    )
    p.add_argument("--force", action="store_true", help="replace an existing target")
    p.set_defaults(func=run)
