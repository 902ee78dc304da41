"""`asymvae export MODEL --format diffusers|onnx|triton --out DIR`: package a trained model, with a model card."""

from __future__ import annotations

import argparse

from asymvae.commands.options import add_command, from_args
from asymvae.export.config import ExportConfig


def run(args: argparse.Namespace) -> int:
    """Export and say where it went."""
    from asymvae.export.run import export_model

    cfg = from_args(ExportConfig, args)
    result = export_model(cfg)
    print(f"Exported {cfg.model} as {cfg.format} to {result.path}")
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
    add_command(
        sub, "export", ExportConfig, run, description=__doc__, positional=("model",),
        help="export a trained model as a diffusers folder, ONNX or a Triton model",
    )  # fmt: skip
