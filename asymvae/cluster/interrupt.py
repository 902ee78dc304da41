"""Turn SIGTERM into an exception, so that a step told to stop can clean up what it started.

Kubernetes stops a pod by sending its main process SIGTERM (Argo does the same when a KFP run is
terminated); Python's default is to die on the spot, which would leave a training job holding its GPUs.
Inside `stop_on_sigterm()` the signal raises `JobInterrupted` in the main thread instead; the job runner
catches it, deletes the job and re-raises.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asymvae.cluster.errors import JobInterrupted


def _raise(signum: int, frame: Any) -> None:
    raise JobInterrupted(f"received {signal.Signals(signum).name}: the step was told to stop")


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises JobInterrupted (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
