"""Turn SIGTERM into an exception, so that a step told to stop can clean up what it started.

Kubernetes stops a pod by sending its main process SIGTERM (Argo does the same when a KFP run is
terminated); Python's default is to die on the spot, which would leave a training job holding its GPUs.
Inside `stop_on_sigterm()` the signal raises `JobInterrupted` in the main thread instead; the job runner
catches it, deletes the job and re-raises.
"""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager

from asymvae.cluster.errors import JobInterrupted
from asymvae.data.termination import sigterm_raises


def stop_on_sigterm() -> AbstractContextManager[None]:
    """Within the block, SIGTERM raises JobInterrupted (main thread only; elsewhere this does nothing)."""
    return sigterm_raises(
        lambda signum: JobInterrupted(f"received {signal.Signals(signum).name}: the step was told to stop")
    )
