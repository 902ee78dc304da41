"""Progress a person can read: a bar on a terminal, else log lines at a steady time cadence.

`Progress` counts items (images, batches, shards) towards a known total or, for a stream, an unknown one.
When its stream (stderr by default) is a terminal and a bar is wanted it draws a tqdm bar; otherwise it
logs one line for the first item, then one every `every_s` seconds (default 30, or the environment
variable `ASYMVAE_PROGRESS_EVERY_S`) and a last one when it closes, each with done/total, elapsed time,
rate and ETA:

    preparing: 254/600 img (42%), 5s elapsed, 49.2 img/s, ETA 7s

so a run of any length logs a bounded number of lines per hour. `phase` announces a long quiet step
(a model download, an ONNX export, checking shards' checksums) before it starts and says how long it took.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

from asymvae.config import ConfigError

__all__ = ["DEFAULT_EVERY_S", "EVERY_ENV", "Progress", "format_duration", "format_rate", "phase", "progress_every"]

_log = logging.getLogger(__name__)

EVERY_ENV = "ASYMVAE_PROGRESS_EVERY_S"
"""Environment variable: seconds between two progress log lines (not the bar)."""
DEFAULT_EVERY_S = 30.0


def progress_every() -> float:
    """Seconds between progress log lines: `ASYMVAE_PROGRESS_EVERY_S` when set, else 30."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not every >= 0:  # also rejects nan
        raise ConfigError(f"{EVERY_ENV}={raw!r} is not a number of seconds >= 0. Fix: e.g. {EVERY_ENV}=30")
    return every


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m` (rounded to the second; hours and minutes from an hour on)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(per_second: float, unit: str) -> str:
    """`6.49 img/s`, `52.3 img/s`, `812 img/s`: two decimals below 10, one below 100, none above."""
    if per_second >= 100:
        return f"{per_second:.0f} {unit}/s"
    if per_second >= 10:
        return f"{per_second:.1f} {unit}/s"
    return f"{per_second:.2f} {unit}/s"


class Progress:
    """Counts items towards `total` (None: unknown) and shows it as a bar or as log lines (module docstring).

    `what` names the work (`preparing`, `scoring`); `unit` the items (`img`). `bar=False` never draws a bar
    (e.g. in a pipeline step whose stderr may be a terminal of no one). `logger` receives the lines (the
    caller's module logger, so that they carry its name). `every_s` overrides the cadence; `clock` and
    `stream` are the time source and the terminal check (both injectable for tests). `waiting_for` (e.g.
    `the first batch`) is logged at the start, when the first item may be long in coming. Use it as a context
    manager, or call `close` once at the end.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "img",
        *,
        logger: logging.Logger | None = None,
        bar: bool = True,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
        waiting_for: str | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.log = logger or _log
        self.every_s = progress_every() if every_s is None else every_s
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._logged_at: float | None = None
        self._logged_done = 0
        self._closed = False
        stream = stream if stream is not None else sys.stderr
        self.bar = None
        if bar and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, file=stream, dynamic_ncols=True)
        elif waiting_for:
            self.log.info("%s: waiting for %s", what, waiting_for)

    def update(self, n: int = 1) -> None:
        """Count `n` more items done; logs a line when it is the first or `every_s` passed since the last."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= self.every_s:
            self._emit(now)

    def line(self, now: float | None = None) -> str:
        """The progress line as of `now` (default: the clock now)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 0.0)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            parts = [f"{self.what}: {self.done} {self.unit}"]
        else:
            share = 100 * self.done / self.total if self.total else 100.0
            parts = [f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0f}%)"]
        parts += [f"{format_duration(elapsed)} elapsed", format_rate(rate, self.unit)]
        if self.total is not None and self.done >= self.total:
            parts.append("done")
        elif self.total is not None:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}" if rate > 0 else "ETA unknown")
        return ", ".join(parts)

    def close(self) -> None:
        """End the bar, or log the last line (unless the last logged line, or none for no items, shows the count)."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.done != self._logged_done:
            self._emit(self.clock())

    def _emit(self, now: float) -> None:
        self.log.info("%s", self.line(now))
        self._logged_at, self._logged_done = now, self.done

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@contextmanager
def phase(
    what: str, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic
) -> Iterator[None]:
    """Log `what` (e.g. `loading the base VAE from X`) before a long quiet step, and how long it took after it
    (`... done in 1m05s`); a step that fails logs nothing more (its error says why)."""
    log = logger or _log
    log.info("%s ...", what)
    started = clock()
    yield
    log.info("%s: done in %s", what, format_duration(clock() - started))
