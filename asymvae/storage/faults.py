"""Faults of the machine, not of asymvae: a full disk, a missing permission, a read-only file system, a
path through a file.

`writing(what, path)` turns such a fault, whichever library raised it (the OS, `torch.save`,
safetensors), into a `StorageError` that names the file, the cause and the fix; any other error passes
through unchanged, keeping its traceback (a bug). `environment_fault` is the same test for one error.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asymvae.errors import UserError
from asymvae.storage.base import StorageError

_ACCESS = "give this user (uid {uid}) access to it, or use another location"
_FIXES: dict[int, str] = {
    errno.ENOSPC: "free space on that file system, or write somewhere else",
    errno.EDQUOT: "free space within your disk quota, or write somewhere else",
    errno.EROFS: "that file system is mounted read-only: write somewhere else",
    errno.EACCES: _ACCESS,
    errno.EPERM: _ACCESS,
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another location",
    errno.EISDIR: "that is a folder, not a file: choose another location",
    errno.EFBIG: "the file is larger than this process may write (`ulimit -f`, or the file system's limit): "
    "raise the limit, or write somewhere else",
}
# Rust libraries (safetensors) report an OS error only in their message: "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_NEARLY_FULL = 1 << 20


def _nearly_full(path: Path) -> bool:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return False
    # root may fill the blocks reserved for it; anyone else stops at the available ones
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return free < _NEARLY_FULL


def fault_errno(error: BaseException, space_at: Path | None = None) -> int | None:
    """The errno of the environment fault behind `error`, or None when it is something else.

    Looks through the exception's chain, at the `(os error N)` of Rust libraries' messages and, when
    `space_at` is given, at the free space where it lies: `torch.save` reports a full disk only as
    "unexpected pos".
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FIXES:
            return seen.errno
        found = _RUST_OS_ERROR.search(str(seen))
        if found and int(found.group(1)) in _FIXES:
            return int(found.group(1))
        seen = seen.__cause__ or seen.__context__
    if space_at is not None and _nearly_full(space_at):
        return errno.ENOSPC
    return None


def environment_fault(
    error: BaseException, action: str, path: Path | None = None, space_at: Path | None = None
) -> StorageError | None:
    """`error` as a one-line StorageError (`cannot <action> <path>: <cause>. Fix: ...`) when it is an
    environment fault (see `fault_errno`), else None. Without `path`, the file the error names."""
    code = fault_errno(error, space_at)
    if code is None:
        return None
    where = path or getattr(error, "filename", None) or "a file"
    fix = _FIXES[code].format(uid=os.geteuid())
    return StorageError(f"cannot {action} {where}: {os.strerror(code)} ({errno.errorcode[code]}). Fix: {fix}.")


@contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Runs the block that writes `what` at `path` (the name the user knows, not a temporary one); an
    environment fault in it becomes a StorageError naming `path`.

    Put it around the writes themselves, inside any cleanup: the free-space test must see the disk as the
    failed write left it.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        fault = environment_fault(e, f"write {what}", path, space_at=path)
        if fault is None:
            raise
        raise fault from e
