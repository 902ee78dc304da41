"""`asymvae train CONFIG`: train, checkpoint, export to OUTPUT/step<N>/vae."""

from __future__ import annotations

import argparse
import logging
import sys

from asymvae.commands.common import add_set_option, load_config

log = logging.getLogger("asymvae")


def run(args: argparse.Namespace) -> int:
    """Train (re-executing under torchrun when NPROC_PER_NODE or PET_* ask for several processes)."""
    from asymvae.training.launch import exec_torchrun, process_rank, torchrun_command

    cfg = load_config(args.config, args.set)  # fail on a bad config before starting any workers
    cmd = torchrun_command(sys.argv[1:])
    if cmd is not None:
        log.info("starting %s", " ".join(cmd))
        exec_torchrun(cmd)
    if args.output:
        cfg.train.output_dir = args.output
    from asymvae.training.run import train

    result = train(cfg, resume=args.resume if args.resume is not None else False)
    if process_rank() == 0:
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` to the command line."""
    p = sub.add_parser("train", help="train a VAE from a preset or YAML config")
    p.add_argument("config", help="preset name (see `asymvae configs`) or a YAML file")
    add_set_option(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint of this run (or from CHECKPOINT)",
    )
    p.add_argument("--output", help="output folder (default: work_dirs/<name>)")
    p.set_defaults(func=run)
