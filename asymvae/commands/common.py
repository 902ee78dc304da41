"""Helpers shared by the subcommands: config loading and the `--set` option."""

from __future__ import annotations

import argparse
from pathlib import Path

from asymvae.config import ConfigError, ExperimentConfig, apply_overrides, load_yaml
from asymvae.presets import PRESETS, get_preset


def load_config(name_or_path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A preset name or a YAML file, with `section.field=value` overrides applied."""
    path = Path(name_or_path)
    if name_or_path in PRESETS:
        cfg = get_preset(name_or_path)
    elif path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        cfg = load_yaml(path)
    else:
        raise ConfigError(f"{name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a YAML file")
    return apply_overrides(cfg, overrides or [])


def add_set_option(parser: argparse.ArgumentParser, example: str = "train.max_steps=100") -> None:
    """The repeatable `--set KEY=VALUE` override option."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {example}")
