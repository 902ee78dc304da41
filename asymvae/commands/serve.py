"""`asymvae serve MODEL_DIR`: serve the exported decoder as a KServe custom predictor on KServe's Python model
server (v2 inference over REST and gRPC, readiness once loaded, Prometheus metrics at `/metrics`); needs
`pip install 'asymvae[serve]'`."""

from __future__ import annotations

import argparse

from asymvae.commands.options import add_command, from_args
from asymvae.extras import check_installed
from asymvae.serving.config import ServeConfig


def run(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    cfg = from_args(ServeConfig, args)
    check_installed("kserve", "serve", "asymvae serve")
    from asymvae.serving.predictor import serve

    serve(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` to the command line."""
    add_command(
        sub, "serve", ServeConfig, run, description=__doc__, positional=("model_dir",),
        help="serve the exported decoder as a KServe predictor (v2 inference)",
    )  # fmt: skip
