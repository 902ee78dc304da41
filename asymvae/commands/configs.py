"""`asymvae configs [NAME] [--section.field VALUE ...]`: list presets, or print one, with any changes, as YAML (a
starting point for your own file)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from asymvae.commands.options import PRESET_NOTE, add_command, config_leaves, from_args, section_values
from asymvae.training.experiment import ExperimentConfig


@dataclass
class ConfigsOptions:
    """`asymvae configs`."""

    name: str | None = None
    """A preset name or YAML file to print, resolved, as YAML (without it: list the presets)."""


def run(args: argparse.Namespace) -> int:
    """Print the preset list, or one resolved config."""
    import yaml

    from asymvae.config import to_dict
    from asymvae.training.presets import PRESETS, describe, load_experiment

    opts = from_args(ConfigsOptions, args)
    if opts.name:
        cfg = load_experiment(opts.name, section_values(args))
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    width = max(len(n) for n in PRESETS)
    for name in sorted(PRESETS):
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `configs` to the command line."""
    add_command(
        sub, "configs", ConfigsOptions, run, help="list presets, or print one as YAML", description=__doc__,
        positional=("name",), sections=config_leaves(ExperimentConfig()), sections_note=PRESET_NOTE,
    )  # fmt: skip
