"""Stable identity of prepared samples: names, tar keys, the train/val split and fingerprints of the inputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from asymvae.data.manifest import FORMAT
from asymvae.data.sources import FolderSource, HFDatasetSource, ImageSource


def sample_names(source: ImageSource) -> list[str]:
    """A stable name per image: its path below a source folder (where it is, not where a link leads), else
    the source's own name."""
    if isinstance(source, FolderSource):
        return [source.relative_name(i) for i in range(len(source))]
    return [source.name(i) for i in range(len(source))]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sample_key(name: str) -> str:
    """A tar-safe key (no dots: WebDataset splits members at the first dot), readable and unique."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name.rsplit(".", 1)[0]).strip("_")[-48:]
    return f"{stem}-{digest(name)[:12]}" if stem else digest(name)[:20]


def split_of(name: str, val_fraction: float) -> str:
    """`val` for a hash-chosen `val_fraction` of names, else `train` (independent of order and of other names)."""
    return "val" if int(digest(name)[:16], 16) / 16**16 < val_fraction else "train"


def source_fingerprint(source: ImageSource, spec: str, names: list[str]) -> str:
    """Changes when the source's images may have changed: file sizes and mtimes, dataset fingerprints."""
    h = hashlib.sha256()
    h.update(f"{type(source).__name__}\n{len(source)}\n".encode())
    if isinstance(source, FolderSource):
        for name, path in zip(names, source.paths, strict=True):
            try:
                st = path.stat()
            except OSError as e:  # a fault of the listing, or a file gone since: its state is the error
                h.update(f"{name}\0!{e.strerror}\n".encode())
                continue
            # chmod leaves size and mtime alone: an unreadable file made readable must count as changed
            unreadable = "" if os.access(path, os.R_OK) else "\0unreadable"
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}{unreadable}\n".encode())
    elif isinstance(source, HFDatasetSource):
        h.update(f"{source.label}\0{source.split}\0{source.column}\0{source.dataset._fingerprint}\n".encode())
    else:
        h.update(f"{spec}\0{source.description}\n".encode())
        for name in names:
            h.update(f"{name}\n".encode())
    return h.hexdigest()


def run_fingerprint(src_fp: str, settings: dict[str, Any]) -> str:
    """Fingerprint of the output: the source fingerprint and the settings that shape the output."""
    text = json.dumps(settings, sort_keys=True, default=list)
    return digest(f"{FORMAT}\n{src_fp}\n{text}")
