"""`asymvae configs [NAME]`: list presets, or print one as YAML (a starting point for your own file)."""

from __future__ import annotations

import argparse

import yaml

from asymvae.commands.common import add_set_option, load_config
from asymvae.config import to_dict
from asymvae.presets import PRESETS, describe


def run(args: argparse.Namespace) -> int:
    """Print the preset list, or one resolved config."""
    if args.name:
        cfg = load_config(args.name, args.set)
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    width = max(len(n) for n in PRESETS)
    for name in sorted(PRESETS):
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `configs` to the command line."""
    p = sub.add_parser("configs", help="list presets, or print one as YAML")
    p.add_argument("name", nargs="?", help="preset name or YAML file to print resolved")
    add_set_option(p)
    p.set_defaults(func=run)
