"""Local files and folders (also on a mounted PVC): atomic writes by temporary name + rename, and `LocalStore`."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from asymvae.storage.base import CHUNK, ObjectInfo, StorageError, Store
from asymvae.storage.faults import environment_fault, writing

log = logging.getLogger(__name__)


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it is not
    thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes | BinaryIO) -> None:
    """Write a file so that readers see the old one or the whole new one: a hidden temporary file beside
    it, fsync, then a rename over it (the folder is created when missing).

    The file gets the permissions `open(path, "w")` would give it (0666 less the umask). A full disk, a
    missing permission or a read-only file system raises a StorageError naming the file.
    """
    tmp: str | None = None
    try:
        with writing("the file", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; this is data, readable like any file
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f, CHUNK)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def match_umask(folder: Path) -> None:
    """Give `folder` and everything below it the permissions `mkdir` and `open(..., "w")` give under the
    umask: some writers choose their own (safetensors 0.8 writes its files 0600, unreadable to the others
    who may read the folder)."""
    mask = umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


WRITTEN_BY = ".asymvae-written"
"""The marker `publish` puts in every folder it publishes: asymvae replaces a folder only when it has it."""


def check_replaceable(final: Path) -> None:
    """Raise a StorageError unless `final` is missing or a folder asymvae published (it holds `WRITTEN_BY`):
    asymvae never replaces what it did not write."""
    if final.exists() and not (final / WRITTEN_BY).is_file():
        raise StorageError(
            f"{final} exists and was not written by asymvae (it has no {WRITTEN_BY} marker), so it is not "
            "replaced. Fix: move it away, or write somewhere else."
        )


def check_files_replaceable(folder: Path, names: list[str]) -> None:
    """Raise a StorageError when one of the files `names` exists in `folder` and the folder does not hold
    `WRITTEN_BY` (asymvae writes it beside the files it writes there: `mark_written`)."""
    if (folder / WRITTEN_BY).is_file():
        return
    for name in names:
        if (folder / name).exists():
            raise StorageError(
                f"{folder / name} exists and was not written by asymvae (its folder has no {WRITTEN_BY} "
                "marker), so it is not overwritten. Fix: move it away, or write somewhere else."
            )


def mark_written(folder: Path) -> None:
    """Mark `folder` as holding files asymvae wrote, which a later run may then replace."""
    (folder / WRITTEN_BY).write_text("written by asymvae; it replaces or removes only folders holding this file\n")


def output_folder_path(final: Path) -> Path:
    """`final` as an absolute path; a StorageError when it is the folder the user is in, one above it, or the
    root: asymvae publishes a folder by renaming a finished one into its place, which needs a name of its own."""
    full = Path(os.path.abspath(final))
    if full == Path(full.anchor) or Path.cwd().is_relative_to(full):
        raise StorageError(
            f"{final} is {'the root folder' if full == Path(full.anchor) else 'the folder you are in, or above it'}; "
            f"asymvae writes this output as a folder of its own and replaces it as a whole. Fix: name a new folder, "
            f"e.g. {final / 'out'}."
        )
    return full


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name, marked as asymvae's (`WRITTEN_BY`), replacing an
    older one that asymvae published without a gap; a folder asymvae did not write is refused
    (`check_replaceable`). Its files get the permissions of any file the user writes (`match_umask`)."""
    final = output_folder_path(final)
    check_replaceable(final)
    mark_written(tmp)
    match_umask(tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, final)


def private_staging_dir(final: Path) -> Path:
    """An empty hidden folder beside `final` for this process alone (`.NAME.tmp-HOST-PID`), to write into
    before `publish`. Such folders that processes of this host left behind when they were killed (the pid
    runs no more) are removed first; no other folder is touched."""
    final = output_folder_path(final)
    prefix = f".{final.name}.tmp-{socket.gethostname()}-"
    if final.parent.is_dir():
        for left in final.parent.iterdir():
            pid = left.name.removeprefix(prefix)
            if left.name.startswith(prefix) and pid.isdigit() and left.is_dir() and not _running(int(pid)):
                log.info("removing %s, left by an export that was stopped", left)
                shutil.rmtree(left, ignore_errors=True)
    tmp = final.with_name(f"{prefix}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _running(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def staging_dir(final: Path) -> Path:
    """An empty hidden folder beside `final` to write into before `publish`."""
    final = output_folder_path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


class LocalStore(Store):
    """Objects are files below `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        key = key.strip("/")
        if any(part in ("..", "") for part in key.split("/")):
            raise StorageError(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes | BinaryIO, length: int | None = None) -> None:
        """Write atomically (`write_atomic`)."""
        write_atomic(self._path(key), data)

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """Read the file in 1 MiB chunks."""
        path = self._path(key)
        try:
            f = path.open("rb")
        except FileNotFoundError as e:
            raise StorageError(f"{path} does not exist") from e
        except OSError as e:
            fault = environment_fault(e, "read", path)
            if fault is None:
                raise
            raise fault from e
        with f:
            while chunk := f.read(CHUNK):
                yield chunk

    def stat(self, key: str) -> ObjectInfo | None:
        """File size, or None."""
        path = self._path(key)
        return ObjectInfo(key.strip("/"), path.stat().st_size) if path.is_file() else None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Files below the root whose relative path starts with `prefix` (hidden temporary files excluded)."""
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, path.stat().st_size))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        """Remove the file if present, then each folder above it (below the root) that this left empty, as
        an object store has no folders to leave behind."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            if folder.is_dir():  # a missing object's folder may be missing too
                if any(folder.iterdir()):
                    break
                folder.rmdir()

    def check(self, create: bool = False) -> None:
        """The root must be a folder (or creatable) and writable."""
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"{self.root} exists and is not a folder. Fix: choose another output location.")
        with writing("the folder", self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable. Fix: choose a folder you can write to.")
