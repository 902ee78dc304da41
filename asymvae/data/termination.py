"""A SIGTERM that stops a run with worker processes cleanly: the workers end quietly, one line is printed.

By default SIGTERM kills the main process at once, and its pool workers then fail, each with a traceback,
on the pipe that led to it. Under `sigterm_stops()` SIGTERM raises `Terminated` in the main thread instead:
the pool's `with` block terminates the workers (which keep SIGTERM's default action, `default_sigterm`),
finished work is flushed by the `finally` blocks, and the `asymvae` command prints one line.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType


class Terminated(BaseException):
    """The process received SIGTERM while `sigterm_stops` was in force."""


@contextmanager
def sigterm_raises(error: Callable[[int], BaseException]) -> Iterator[None]:
    """While the block runs, SIGTERM raises `error(signum)` in the main thread (elsewhere this changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise error(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sigterm_stops() -> AbstractContextManager[None]:
    """SIGTERM raises `Terminated` while the block runs (in the main thread; elsewhere it changes nothing)."""
    return sigterm_raises(lambda signum: Terminated("stopped by SIGTERM"))


def default_sigterm() -> None:
    """Give SIGTERM its default action (in a forked worker, which inherits the parent's handler)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
