"""The `asymvae` command (also installed as `vaeengine`, so the reference engine's commands work verbatim)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from asymvae.config import ConfigError, ExperimentConfig, apply_overrides, load_yaml, to_dict
from asymvae.presets import PRESETS, describe, get_preset

log = logging.getLogger("asymvae")


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


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = os.environ.get("ASYMVAE_LOG_LEVEL", "INFO" if rank == 0 else "WARNING").upper()
    prefix = f"[rank {rank}] " if "LOCAL_RANK" in os.environ else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("accelerate", "diffusers", "datasets", "urllib3", "filelock", "fsspec", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def cmd_train(args: argparse.Namespace) -> int:
    """`asymvae train CONFIG`: train, checkpoint, export to OUTPUT/step<N>/vae."""
    from asymvae.training.launch import exec_torchrun, torchrun_command

    cfg = load_config(args.config, args.set)  # fail on a bad config before starting any workers
    cmd = torchrun_command(sys.argv[1:])
    if cmd is not None:
        log.info("starting %s", " ".join(cmd))
        exec_torchrun(cmd)
    if args.output:
        cfg.train.output_dir = args.output
    from asymvae.training.run import train

    result = train(cfg, resume=args.resume if args.resume is not None else False)
    if int(os.environ.get("RANK", "0")) == 0:
        m = result.metrics
        shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("loss", "l1", "l2", "lpips", "kl") if k in m)
        vae_cls = "AsymmetricAutoencoderKL" if cfg.model.kind == "asymmetric" else "AutoencoderKL"
        print(
            f"\nTrained {cfg.name} for {result.step} steps in {result.seconds:.0f} s (final {shown}).\n"
            f"Exported: {result.export}/vae\n"
            f"Load it with:\n"
            f"  from diffusers import {vae_cls}\n"
            f'  vae = {vae_cls}.from_pretrained("{result.export}", subfolder="vae")'
        )
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    """`asymvae configs [NAME]`: list presets, or print one as YAML (a starting point for your own file)."""
    if args.name:
        cfg = load_config(args.name, args.set)
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    width = max(len(n) for n in PRESETS)
    for name in sorted(PRESETS):
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="asymvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a VAE from a preset or YAML config")
    p.add_argument("config", help="preset name (see `asymvae configs`) or a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.max_steps=100")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint of this run (or from CHECKPOINT)",
    )
    p.add_argument("--output", help="output folder (default: work_dirs/<name>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("configs", help="list presets, or print one as YAML")
    p.add_argument("name", nargs="?", help="preset name or YAML file to print resolved")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_configs)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `asymvae` and `vaeengine`."""
    from asymvae.errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        sys.exit(args.func(args))
    except USER_ERRORS as e:
        print(f"asymvae {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
