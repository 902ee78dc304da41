"""The `ImageSource` interface (random access to a source's raw images) and its file and dataset forms.

`asymvae.data.sources.open_source` picks one from a spec; `asymvae.data.demo_images.DemoSource` is the
built-in demo's.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from PIL import Image

from asymvae.data.images import BadImageError
from asymvae.errors import UserError

__all__ = ["DataSourceError", "FolderSource", "HFDatasetSource", "ImageSource"]


class DataSourceError(UserError, RuntimeError):
    """A training data source that cannot be opened or used; the message says what, where and how to fix."""


class ImageSource(ABC):
    """Random access to the raw images of a source; `load(i)` is not validated or converted yet."""

    description: str
    """One line naming the source, for logs and error messages."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, i: int) -> bytes | Image.Image:
        """Encoded bytes (or a PIL image) of image `i`; raises `BadImageError` when it cannot be read."""

    @abstractmethod
    def name(self, i: int) -> str:
        """Where image `i` comes from (a file path or `<dataset>[split][row]`), for reports."""

    @abstractmethod
    def head(self, n: int) -> ImageSource:
        """The same source limited to its first `n` images."""

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {self.description} ({n} images)")
        return i % n


def _shown(path: str) -> str:
    """A path as text that can be printed and hashed: bytes of a file name that are not UTF-8 (which Python
    keeps as lone surrogates) become `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class FolderSource(ImageSource):
    """Image files on disk, in sorted path order, below `root`.

    `faults` are entries of the folder that could not be read at all (a folder without permission, a
    broken or looping link): they take their place in the order like files, and loading one raises its
    `BadImageError`, so every reader reports and counts them as bad images.
    """

    def __init__(
        self,
        paths: list[Path],
        description: str,
        root: Path | None = None,
        faults: dict[Path, BadImageError] | None = None,
    ) -> None:
        self.paths = paths
        self.description = description
        self.root = root
        self.faults = faults or {}

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> bytes:
        """The file's bytes."""
        path = self.paths[self._check_index(i)]
        fault = self.faults.get(path)
        if fault is not None:
            raise BadImageError(fault.reason, fault.kind)
        try:
            return path.read_bytes()
        except OSError as e:
            raise BadImageError(f"cannot read file: {e.strerror or e}", "unreadable") from e

    def name(self, i: int) -> str:
        """The file path."""
        return _shown(str(self.paths[self._check_index(i)]))

    def relative_name(self, i: int) -> str:
        """The path below `root` (`/`-separated), the full path when there is no root."""
        path = self.paths[self._check_index(i)]
        return _shown(path.relative_to(self.root).as_posix() if self.root is not None else str(path))

    def head(self, n: int) -> FolderSource:
        """The first `n` files."""
        return FolderSource(self.paths[:n], f"{self.description}, first {n}", self.root, self.faults)


class HFDatasetSource(ImageSource):
    """One column of a `datasets.Dataset`, read raw: an Image column is cast to `Image(decode=False)`."""

    def __init__(self, dataset: Any, column: str, label: str, split: str, base_dir: Path | None = None) -> None:
        # Only the image column: rows are then cheap to fetch and captions etc. are never materialised.
        self.dataset = dataset.select_columns([column])
        self.column = column
        self.label = label
        self.split = split
        self.base_dir = base_dir
        self.description = f"dataset {label} (split {split!r}, column {column!r}, {len(self.dataset)} rows)"

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> bytes | Image.Image:
        """The row's encoded image bytes (read from its `path` when the dataset stores only paths)."""
        value = self.dataset[self._check_index(i)][self.column]
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return bytes(value["bytes"])
            value = value.get("path")
        if value is None:
            raise BadImageError("missing image (empty value in this row)", "empty")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, str):
            path = Path(value).expanduser()
            if not path.is_absolute() and self.base_dir is not None and not path.exists():
                path = self.base_dir / path
            try:
                return path.read_bytes()
            except OSError as e:
                raise BadImageError(f"cannot read file {value!r}: {e.strerror or e}", "unreadable") from e
        raise BadImageError(f"not an image value: {type(value).__name__}", "not_image")

    def name(self, i: int) -> str:
        """`<dataset>[split][row]`."""
        return f"{self.label}[{self.split}][{self._check_index(i)}]"

    def head(self, n: int) -> HFDatasetSource:
        """The first `n` rows."""
        truncated = HFDatasetSource(self.dataset.select(range(n)), self.column, self.label, self.split, self.base_dir)
        truncated.description += f", first {n}"
        return truncated
