"""One writer per output folder: an exclusive lock that names its holder.

`own_folder(folder, command)` takes an exclusive `flock` on `folder/.asymvae.lock` for as long as the
block runs and writes who holds it (command, pid, host, since) into that file. `own_target(target, command)`
does the same for an output that is published whole by renaming a finished folder into place (an export),
with the lock file beside it, `.NAME.asymvae.lock`, removed again when the block ends. A second asymvae process
that wants the same folder gets one line naming the holder instead of writing beside it. The kernel
drops the lock when its holder exits, however it exits, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asymvae.storage.base import StorageError
from asymvae.storage.faults import writing
from asymvae.storage.local import output_folder_path

LOCK_NAME = ".asymvae.lock"


class FolderInUseError(StorageError):
    """Another process holds the output folder's lock; the message names it."""


def _holder(lock: Path) -> str:
    try:
        who = json.loads(lock.read_text())
        return f"{who['command']} (pid {who['pid']} on {who['host']}, since {who['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"


@contextmanager
def own_folder(folder: Path, command: str) -> Iterator[None]:
    """Hold `folder` exclusively for `command` while the block runs; raises FolderInUseError naming the
    holder when another process holds it (the folder is created when missing)."""
    folder = Path(folder)
    with _holding(folder, folder / LOCK_NAME, command):
        yield


@contextmanager
def own_target(target: Path, command: str) -> Iterator[None]:
    """Hold the output `target` (a folder published whole, which may not exist yet) exclusively for `command`
    while the block runs, through `.NAME.asymvae.lock` beside it; raises FolderInUseError naming the holder."""
    target = output_folder_path(target)
    with _holding(target, target.with_name(f".{target.name}{LOCK_NAME}"), command, remove=True):
        yield


@contextmanager
def _holding(output: Path, lock: Path, command: str, remove: bool = False) -> Iterator[None]:
    """Hold `lock` for `output`; with `remove`, the lock file is removed again on the way out (a holder that
    finds its file replaced after locking locks the new one: two holders never hold different files)."""
    while True:
        with writing("the lock file", lock):
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUseError(
                f"{output} is in use by {_holder(lock)}. Fix: wait for that run to end (or stop it), or write "
                "somewhere else (another --output)."
            ) from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # its holder removed it while we waited to lock it: lock the file there now
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        who = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since}
        with writing("the lock file", lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(who).encode(), 0)
        yield
    finally:
        if remove:
            lock.unlink(missing_ok=True)
        os.close(fd)
