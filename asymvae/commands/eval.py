"""`asymvae eval MODEL --data SOURCE --baseline BASE_VAE`: score the asymmetric decoder against the baseline's."""

from __future__ import annotations

import argparse

from asymvae.commands.options import add_command, from_args
from asymvae.evaluation.config import EvalConfig


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the table."""
    from asymvae.evaluation.run import evaluate

    result = evaluate(from_args(EvalConfig, args))
    print((result.files["markdown"]).read_text(), end="")
    print("\nWrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` to the command line."""
    add_command(
        sub, "eval", EvalConfig, run, description=__doc__, positional=("model",),
        help="score a trained asymmetric decoder against the baseline VAE's decoder",
    )  # fmt: skip
