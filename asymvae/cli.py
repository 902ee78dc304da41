"""The `asymvae` command (also installed as `vaeengine`, so the reference engine's commands work verbatim)."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import signal
import sys

from asymvae.commands import configs, eval, export, infer, inpaint, pipeline, prepare, serve, train
from asymvae.commands.options import unknown_options
from asymvae.data.termination import Terminated
from asymvae.errors import UserError
from asymvae.storage.faults import environment_fault
from asymvae.training.launch import process_rank

# Each subcommand lives in asymvae/commands/<name>.py and adds itself with register().
COMMANDS = (train, configs, prepare, eval, export, infer, serve, inpaint, pipeline)


def _setup_logging() -> None:
    rank = process_rank()
    level = os.environ.get("ASYMVAE_LOG_LEVEL", "INFO" if rank == 0 else "WARNING").upper()
    prefix = f"[rank {rank}] " if "LOCAL_RANK" in os.environ else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("accelerate", "diffusers", "datasets", "urllib3", "filelock", "fsspec", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="asymvae", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version('asymvae')}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `asymvae` and `vaeengine`."""
    args, extras = build_parser().parse_known_args(argv)
    if extras:  # the subcommand's own usage, and the closest option it knows
        args.parser.error(unknown_options(args.parser, extras))
    _setup_logging()
    try:
        sys.exit(args.func(args))
    except UserError as e:
        _fail(args.command, e)
    except KeyboardInterrupt:
        hint = " (`--resume` continues from the last checkpoint)" if args.command == "train" else ""
        print(f"asymvae {args.command}: interrupted{hint}", file=sys.stderr)
        sys.exit(130)
    except Terminated as e:
        print(f"asymvae {args.command}: {e}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except OSError as e:
        # A full disk or a missing permission the library did not name more precisely is still the
        # environment's fault, not a bug: one line too. Any other OSError keeps its traceback.
        fault = environment_fault(e, "use")
        if fault is None:
            raise
        _fail(args.command, fault)


def _fail(command: str, error: UserError) -> None:
    print(f"asymvae {command}: error: {error}", file=sys.stderr)
    sys.exit(2)
