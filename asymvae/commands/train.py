"""`asymvae train CONFIG [--section.field VALUE ...]`: train, checkpoint, export to OUTPUT/step<N>/vae.

Any config value can be changed on top of the preset or YAML file: `--train.max-steps 100`,
`--data.shards s3://bucket/prefix/manifest.json`, `--optim.betas [0.9,0.99]` (values read as YAML)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from asymvae.commands.options import PRESET_NOTE, add_command, config_leaves, from_args, section_values
from asymvae.training.experiment import ExperimentConfig

log = logging.getLogger("asymvae")


@dataclass
class TrainOptions:
    """`asymvae train`."""

    config: str
    """A preset name (see `asymvae configs`) or a YAML file."""
    resume: bool = False
    """Continue from the newest complete checkpoint of this run."""
    resume_from: str | None = None
    """Continue from this checkpoint folder (implies --resume)."""
    output: str | None = None
    """Output folder (default: `work_dirs/<name>`)."""


def run(args: argparse.Namespace) -> int:
    """Train (re-executing under torchrun when NPROC_PER_NODE or PET_* ask for several processes)."""
    from asymvae.training.launch import exec_torchrun, process_rank, torchrun_command
    from asymvae.training.presets import load_experiment

    opts = from_args(TrainOptions, args)
    cfg = load_experiment(opts.config, section_values(args))  # fail on a bad config before starting any workers
    cmd = torchrun_command(sys.argv[1:])
    if cmd is not None:
        log.info("starting %s", " ".join(cmd))
        exec_torchrun(cmd)
    if opts.output:
        cfg.train.output_dir = opts.output
    from asymvae.training.run import train

    result = train(cfg, resume=opts.resume_from or opts.resume)
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
    add_command(
        sub, "train", TrainOptions, run, help="train a VAE from a preset or YAML config", description=__doc__,
        positional=("config",), sections=config_leaves(ExperimentConfig()), sections_note=PRESET_NOTE,
    )  # fmt: skip
