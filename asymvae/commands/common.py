"""Helpers shared by the subcommands: the `--set` option."""

from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, example: str = "train.max_steps=100") -> None:
    """The repeatable `--set KEY=VALUE` override option."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {example}")
