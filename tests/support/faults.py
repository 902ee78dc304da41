"""Helpers of the fault-injection suite: the `asymvae` command in a real process, as a user whom file modes
bind, with a chosen umask, onto a file system that fills up."""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2

Preexec = Callable[[], None]


def asymvae(
    *args: str, preexec: Sequence[Preexec] = (), env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m asymvae ARGS` in a new process, after running `preexec` in it."""

    def before_exec() -> None:
        for step in preexec:
            step()

    return subprocess.run(
        [sys.executable, "-m", "asymvae", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        preexec_fn=before_exec if preexec else None,
        timeout=timeout,
    )


def one_line_error(run: subprocess.CompletedProcess, command: str) -> str:
    """The error line of a run that failed as a user error should (exit 2, no traceback); returns it."""
    assert run.returncode == 2, f"exit {run.returncode}:\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith(f"asymvae {command}: error: ")]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


def _drop_permission_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def modes_bind() -> list[Preexec]:
    """The preexec steps under which file modes bind the child process as they bind an ordinary user.

    An ordinary user needs none. Root ignores modes through two capabilities; the child drops them from its
    bounding set, so exec cannot give them back, and is then held to the mode bits of every file (as the
    owner of the files the suite made, so `chmod 000` and `chmod 555` deny it what they deny anyone). This
    rather than a switch to `nobody`: the interpreter may live where `nobody` cannot read (under /root).
    Skips the test when root cannot drop them.
    """
    if os.geteuid() != 0:
        return []
    try:
        subprocess.run(["true"], preexec_fn=_drop_permission_override, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"running as root without the right to drop CAP_DAC_OVERRIDE ({e}): file modes cannot bind")
    return [_drop_permission_override]


def with_umask(mask: int) -> Preexec:
    """A preexec step that sets the child's umask."""
    return lambda: os.umask(mask)


@dataclass
class SmallDisk:
    """A folder where writing more than `size` bytes fails, and how."""

    path: Path
    size: int
    errno: str
    """ENOSPC on a tmpfs of that size; EFBIG where no file system can be mounted (a file size limit)."""
    preexec: list[Preexec]
    """What the writing process must run first (the file size limit, in the EFBIG case)."""


@contextmanager
def small_disk(where: Path, size: int) -> Iterator[SmallDisk]:
    """A tmpfs of `size` bytes mounted at `where` when this process may mount one (root, as in CI): a real
    full disk, ENOSPC. Otherwise `where` stays a plain folder and the writer runs under RLIMIT_FSIZE=`size`,
    which fails a write past it with EFBIG (Python ignores SIGXFSZ): not ENOSPC, but the same code paths.
    """
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode == 0:
        try:
            yield SmallDisk(where, size, "ENOSPC", [])
        finally:
            subprocess.run(["umount", "-l", str(where)], check=True)
        return

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    yield SmallDisk(where, size, "EFBIG", [limit])
