"""WebDataset-style tar shards: writing them, reading them back, and the evaluation reader `iter_split`.

A sample is a run of tar members sharing a key: `<key>.jpg` (or `.png`), `<key>.json` (metadata) and, in
the validation split, `<key>.mask.png` (the fixed evaluation mask: a 1-bit PNG, 1 = hole).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from asymvae.data.image_source import DataSourceError

BLOCK = 512
_SPOOL_BYTES = 64 << 20
_NOT_OURS = (
    "Fix: the shard was not written by `asymvae prepare` (or was changed together with its manifest's "
    "checksum): prepare the source again into a new --out."
)


class RecordError(DataSourceError):
    """A shard, or a record in it, that is not what `asymvae prepare` writes (unreadable tar, no image or
    metadata member, an image that does not decode)."""


def member_size(payload: int) -> int:
    """Bytes a member of `payload` bytes takes in a tar (header + data padded to 512)."""
    return BLOCK + -(-payload // BLOCK) * BLOCK


def _sample_bytes(files: dict[str, bytes]) -> int:
    return sum(member_size(len(b)) for b in files.values())


def _padded(size: int) -> int:
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class ShardWriter:
    """Builds one tar in memory (spilling to disk above 64 MiB) with deterministic headers."""

    def __init__(self) -> None:
        # Both stay open across add() calls and are closed by finish().
        self._file = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.samples = 0
        self._members = 0  # bytes of the members written so far

    def size_with(self, files: dict[str, bytes]) -> int:
        """Size the finished tar would have with this sample added: members, two end blocks, padded to tar's
        10 KiB record size."""
        return _padded(self._members + _sample_bytes(files) + 2 * BLOCK)

    def add(self, key: str, files: dict[str, bytes]) -> None:
        """Append one sample: `files` maps an extension (`jpg`, `json`, `mask.png`) to its bytes."""
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # identical inputs give identical bytes, so checksums are reproducible
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self._members += _sample_bytes(files)

    def finish(self) -> tuple[BinaryIO, int, str]:
        """Close the archive; returns (file positioned at 0, size, sha256)."""
        self._tar.close()
        f = self._file
        size = f.tell()
        f.seek(0)
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        f.seek(0)
        return f, size, digest.hexdigest()


def iter_records(data: bytes | BinaryIO, where: str = "shard") -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a tar shard, in order; `where` names it in errors."""
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    key: str | None = None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                k, _, ext = base.partition(".")
                if k != key:
                    if key is not None:
                        yield key, files
                    key, files = k, {}
                f = tar.extractfile(member)
                files[ext] = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError) as e:
        raise RecordError(f"{where} is not a readable tar shard ({e}). {_NOT_OURS}") from e
    if key is not None:
        yield key, files


def iter_counted(data: bytes | BinaryIO, where: str, samples: int) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`iter_records`, then a RecordError when the shard held another number of records than `samples`
    (its manifest's count): a manifest whose counts were edited, its checksums left as they were, is caught."""
    count = 0
    for record in iter_records(data, where):
        count += 1
        yield record
    if count != samples:
        raise RecordError(
            f"{where} holds {count} records, its manifest says {samples}. Fix: the manifest was changed after "
            "`asymvae prepare` wrote it: prepare the source again into a new --out."
        )


def record_image(files: dict[str, bytes], where: str = "record") -> Image.Image:
    """A record's image member, decoded to RGB; `where` names the record in errors."""
    for ext in ("jpg", "png", "jpeg", "webp"):
        if ext in files:
            try:
                with Image.open(io.BytesIO(files[ext])) as img:
                    return img.convert("RGB")
            except Exception as e:  # Pillow raises many types on broken data
                raise RecordError(f"{where}: its image does not decode ({type(e).__name__}: {e}). {_NOT_OURS}") from e
    raise RecordError(f"{where} has no image member (it has {', '.join(sorted(files)) or 'none'}). {_NOT_OURS}")


def record_meta(files: dict[str, bytes], where: str = "record") -> dict[str, Any]:
    """A record's JSON metadata (source name, ordinal, sizes); `where` names the record in errors."""
    try:
        meta = json.loads(files["json"])
        int(meta["ordinal"])
    except (KeyError, ValueError, TypeError) as e:
        raise RecordError(f"{where} has no valid metadata member ({type(e).__name__}: {e}). {_NOT_OURS}") from e
    return meta


def decode_mask(png: bytes) -> np.ndarray:
    """A stored mask PNG as a bool array (True = hole)."""
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("L")) > 127


def encode_mask(mask: np.ndarray) -> bytes:
    """A 0/1 mask as a 1-bit PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask) > 0.5).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@dataclass
class Sample:
    """One prepared image, as the evaluation code reads it."""

    key: str
    image: Image.Image
    """RGB."""
    mask: np.ndarray | None
    """(H, W) bool, True = hole; the fixed evaluation mask (validation split only)."""
    meta: dict[str, Any]
    """The sample's JSON metadata: source name, ordinal, sizes."""


def iter_split(manifest_uri: str, split: str = "val") -> Iterator[Sample]:
    """Every sample of one split of a prepared dataset, in manifest order; each shard's checksum is verified.

    `manifest_uri` is the manifest (`.../manifest.json`) or its folder, local or `s3://`.
    """
    from asymvae.data.manifest import load_manifest

    manifest, store = load_manifest(manifest_uri)
    if split not in manifest.splits:
        raise DataSourceError(f"{manifest_uri} has no split {split!r}; splits: {sorted(manifest.splits)}")
    for shard in manifest.shards_of(split):
        data = store.get_verified(shard.name, shard.sha256, shard.bytes)
        for key, files in iter_counted(data, store.url(shard.name), shard.samples):
            where = f"{store.url(shard.name)}, record {key}"
            mask = decode_mask(files["mask.png"]) if "mask.png" in files else None
            yield Sample(key, record_image(files, where), mask, record_meta(files, where))
