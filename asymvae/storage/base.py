"""The `Store` interface shared by local folders and S3 buckets, and its errors."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from asymvae.errors import UserError


class StorageError(UserError, RuntimeError):
    """Object storage cannot be used (credentials, endpoint, bucket, missing object); the message says how to fix."""


class ChecksumError(StorageError):
    """An object's bytes do not match the checksum recorded for it (corrupt or replaced since it was written)."""


@dataclass(frozen=True)
class ObjectInfo:
    """An object's key (relative to the store's root) and size in bytes."""

    key: str
    size: int


CHUNK = 1 << 20
"""Bytes per chunk of a streaming read."""


class Store(ABC):
    """Objects under one root; keys are `/`-separated paths relative to it."""

    uri: str
    """The root, as given to `open_store` (normalised)."""

    @abstractmethod
    def put(self, key: str, data: bytes | BinaryIO, length: int | None = None) -> None:
        """Write an object atomically: readers see the old object or the whole new one, never a part."""

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes as a stream of chunks (raises `StorageError` if it does not exist)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None when there is none."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects whose key starts with `prefix`, recursively, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error when it does not exist)."""

    @abstractmethod
    def check(self, create: bool = False) -> None:
        """Verify that the root is usable (bucket exists, credentials work); `create` makes a missing bucket/folder."""

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        return self.stat(key) is not None

    def get(self, key: str) -> bytes:
        """The whole object."""
        return b"".join(self.iter_chunks(key))

    def get_verified(self, key: str, sha256: str, size: int | None = None) -> bytes:
        """The whole object, checked against its recorded sha256 (and size); raises `ChecksumError` on mismatch."""
        digest = hashlib.sha256()
        parts = []
        for chunk in self.iter_chunks(key):
            digest.update(chunk)
            parts.append(chunk)
        data = b"".join(parts)
        if (size is not None and len(data) != size) or digest.hexdigest() != sha256:
            raise ChecksumError(
                f"{join_uri(self.uri, key)} is corrupt: {len(data)} bytes with sha256 {digest.hexdigest()[:16]}..., "
                f"expected {size if size is not None else '?'} bytes with sha256 {sha256[:16]}... (as recorded in "
                "the manifest). Fix: re-run `asymvae prepare` with the same source and --out to rewrite it."
            )
        return data

    def verify(self, key: str, sha256: str, size: int) -> str | None:
        """Why the object does not match its recorded size and sha256 (missing, another size, another
        checksum), or None when it does. Reads it as a stream."""
        found = self.stat(key)
        if found is None:
            return "missing"
        if found.size != size:
            return f"{found.size} bytes, expected {size}"
        digest = hashlib.sha256()
        for chunk in self.iter_chunks(key):
            digest.update(chunk)
        return _mismatch(found.size, size, digest.hexdigest(), sha256)

    def download(self, key: str, path: Path, sha256: str, size: int) -> str | None:
        """Stream the object into the file `path` (replacing it); why it does not match its recorded size and
        sha256 (another size, another checksum), or None when it does."""
        digest, found = hashlib.sha256(), 0
        with path.open("wb") as f:
            for chunk in self.iter_chunks(key):
                f.write(chunk)
                digest.update(chunk)
                found += len(chunk)
        return _mismatch(found, size, digest.hexdigest(), sha256)

    def url(self, key: str) -> str:
        """The full URI of an object, for messages."""
        return join_uri(self.uri, key)


def _mismatch(size: int, expected_size: int, sha256: str, expected_sha256: str) -> str | None:
    """How an object's size and sha256 differ from those recorded for it, or None."""
    if size != expected_size:
        return f"{size} bytes, expected {expected_size}"
    if sha256 != expected_sha256:
        return f"sha256 {sha256[:16]}..., expected {expected_sha256[:16]}..."
    return None


def join_uri(root: str, key: str) -> str:
    """`root/key` without doubled slashes."""
    if not key:
        return root
    return f"{root.rstrip('/')}/{key.lstrip('/')}"


def split_uri(uri: str) -> tuple[str, str]:
    """(`parent`, `name`) of a URI or path: the part before and after the last `/`."""
    stripped = uri.rstrip("/")
    parent, _, name = stripped.rpartition("/")
    if not parent and stripped.startswith("/"):
        parent = "/"
    return parent or ".", name
