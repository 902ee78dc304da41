"""`launcher=local`: run the same training as the cluster job, in place, under torchrun when asked.

The command is the job's (`asymvae train CONFIG --section.field=value ...`) and NPROC_PER_NODE is the job's
nprocPerNode, so `asymvae train` re-executes itself under `torchrun --standalone` exactly as on one node of the cluster.
Object-store credentials come from this process's environment (there is no Secret to mount).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from asymvae.cluster.errors import JobFailedError
from asymvae.cluster.jobspec import TrainingJobSpec, plain_env, train_args

log = logging.getLogger(__name__)


@dataclass
class LocalLaunch:
    """A local run: the command line and the environment variables it adds."""

    argv: list[str]
    env: dict[str, str]


def local_launch(spec: TrainingJobSpec) -> LocalLaunch:
    """The command and environment that run `spec`'s training in place, on the machine running the step (pure)."""
    env = {**plain_env(spec), "NPROC_PER_NODE": str(spec.processes_per_node)}
    return LocalLaunch([sys.executable, "-m", "asymvae", *train_args(spec)], env)


def run_local(spec: TrainingJobSpec, cwd: str | None = None) -> float:
    """Run `spec`'s training here (output streams to this process's stdout); returns seconds taken.

    Raises JobFailedError with the exit status when training fails.
    """
    launch = local_launch(spec)
    log.info("running locally: %s", " ".join(launch.argv))
    start = time.perf_counter()
    rc = subprocess.run(launch.argv, env={**os.environ, **launch.env}, cwd=cwd, check=False).returncode
    if rc != 0:
        raise JobFailedError(
            f"local training of {spec.name} ({spec.config}) exited with status {rc}; its output is above",
            reason=f"ExitCode{rc}",
        )
    return time.perf_counter() - start
