"""A SIGTERM that stops a run with worker processes cleanly: the workers end quietly, one line is printed.

By default SIGTERM kills the main process at once, and its pool workers then fail, each with a traceback,
on the pipe that led to it. Under `sigterm_stops()` SIGTERM raises `Terminated` in the main thread instead:
the pool's `with` block terminates the workers (which keep SIGTERM's default action, `default_sigterm`),
finished work is flushed by the `finally` blocks, and the `asymvae` command prints one line.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(BaseException):
    """The process received SIGTERM while `sigterm_stops` was in force."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated("stopped by SIGTERM")


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM raises `Terminated` while the block runs (in the main thread; elsewhere it changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_sigterm() -> None:
    """Give SIGTERM its default action (in a forked worker, which inherits the parent's handler)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
