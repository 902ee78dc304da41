"""`asymvae train CONFIG`: train, checkpoint, export to OUTPUT/step<N>/vae."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from asymvae.commands.options import PRESET_NOTE, add_command, from_args
from asymvae.training.experiment import ExperimentConfig

log = logging.getLogger("asymvae")


@dataclass
class TrainOptions:
    """`asymvae train`."""

    config: str
    """A preset name (see `asymvae configs`) or a YAML file."""
    set: list[str] = field(default_factory=list)
    """Override one config key, `section.field=value` (value read as YAML), e.g. `train.max_steps=100`;
    repeatable. The keys are listed below."""
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
    cfg = load_experiment(opts.config, opts.set)  # fail on a bad config before starting any workers
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
        positional=("config",), set_keys=(ExperimentConfig, "", PRESET_NOTE),
    )  # fmt: skip
