"""Start training under torchrun when asked for several processes (never a home-made launcher).

`NPROC_PER_NODE=N asymvae train ...` re-executes itself as `torchrun --standalone --nproc_per_node N`.
Inside a Kubeflow PyTorchJob the operator sets PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE and
PET_MASTER_ADDR/PORT, which torchrun reads by itself, so the same command spans nodes unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The environment a training process reads beside torchrun's (set by PyTorchJob pods; see training/metrics.py).
METRICS_PORT_ENV = "ASYMVAE_METRICS_PORT"
"""Port rank 0 serves Prometheus `/metrics` on (empty: off); wins over `train.metrics_port`."""
METRICS_ADDR_ENV = "ASYMVAE_METRICS_ADDR"
"""Address the metrics server binds (default 0.0.0.0, so a PodMonitor can scrape it)."""
PUSHGATEWAY_ENV = "PUSHGATEWAY_URL"
"""Pushgateway the run's outcome is pushed to; wins over `train.pushgateway`."""


def process_rank() -> int:
    """This process's global rank under torchrun (`RANK`); 0 outside it."""
    return int(os.environ.get("RANK", "0"))


def torchrun_command(argv: list[str], env: Mapping[str, str] = os.environ) -> list[str] | None:
    """The torchrun command line to re-execute `asymvae argv` with, or None to run in this process."""
    if "LOCAL_RANK" in env or "TORCHELASTIC_RUN_ID" in env:
        return None  # already a torchrun worker
    nproc = env.get("NPROC_PER_NODE") or env.get("PET_NPROC_PER_NODE")
    nnodes = env.get("PET_NNODES") or env.get("NNODES") or "1"
    multi_node = nnodes not in ("1", "1:1")
    if not multi_node and (not nproc or nproc == "1"):
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if multi_node:
        # torchrun takes --nnodes/--node_rank/--master_addr/--master_port from PET_* itself.
        if env.get("NPROC_PER_NODE"):
            cmd.append(f"--nproc_per_node={env['NPROC_PER_NODE']}")
    else:
        cmd += ["--standalone", f"--nproc_per_node={nproc}"]
    return [*cmd, "-m", "asymvae", *argv]


def exec_torchrun(cmd: list[str]) -> None:
    """Replace this process with torchrun (signals and exit codes then pass straight through)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
