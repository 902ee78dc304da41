"""Writing the shards of each split in order, with a receipt per finished shard so an interrupted run can
resume, and a damaged shard of an earlier run can be found and rebuilt in its place."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from asymvae.data.shards import ShardWriter
from asymvae.progress import phase
from asymvae.storage import StorageError, Store

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
_VERIFY_THREADS = 4


def verify_shards(store: Store, shards: Sequence[tuple[str, str, int]]) -> list[str | None]:
    """For each (name, sha256, bytes): why the stored shard does not match it, or None when it does.

    Reads every shard once, a few at a time (object stores answer faster in parallel).
    """
    if not shards:
        return []
    with (
        phase(f"checking {len(shards)} shards of {store.uri} against their sha256", log),
        ThreadPoolExecutor(_VERIFY_THREADS, thread_name_prefix="shard-verify") as pool,
    ):
        return list(pool.map(lambda s: store.verify(s[0], s[1], s[2]), shards))


@dataclass
class SplitState:
    """Writer state of one split: finished shard receipts, the open shard, bad images and the pixel digests of
    the samples since the last shard."""

    name: str
    receipts: list[dict[str, Any]] = field(default_factory=list)
    writer: ShardWriter | None = None
    bad: list[list[str]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    """Pixel digest -> name of each sample in the open shard (receipts keep those of finished shards)."""

    def names_by_digest(self) -> dict[str, str]:
        """Pixel digest -> name of every sample of this split so far, finished shards and the open one."""
        known = {d: n for r in self.receipts for d, n in r.get("digests", {}).items()}
        return known | self.digests

    @property
    def done_end(self) -> int:
        """Source index up to which this split is covered by finished shards."""
        return self.receipts[-1]["end"] if self.receipts else 0

    @property
    def ordinal(self) -> int:
        """Samples written to finished shards plus the open one."""
        return sum(r["samples"] for r in self.receipts) + (self.writer.samples if self.writer else 0)


class ShardSink:
    """Writes the shards of both splits into `folder` (`shards-<fingerprint>`) and a receipt after each.

    A split's shard k covers the source indices from the end of shard k-1 up to its receipt's `end`,
    including that range's bad images, so resuming a split means skipping the indices its receipts cover.
    """

    def __init__(self, store: Store, folder: str, max_bytes: int) -> None:
        self.store = store
        self.folder = folder
        self.max_bytes = max_bytes
        self.splits = {s: SplitState(s) for s in SPLITS}
        self.damaged: list[tuple[SplitState, int, str]] = []
        """(split, receipt index, what is wrong) of each kept receipt whose shard is missing or damaged."""
        # Uploads run on one background thread, in order, one at a time: the next shard fills meanwhile.
        self._uploader = ThreadPoolExecutor(1, thread_name_prefix="shard-upload")
        self._pending: Future | None = None

    def resume(self, verified: Collection[str] = ()) -> int:
        """Adopt the receipts of an earlier run with the same fingerprint; returns how many shards are whole.

        Each receipt's shard is checked against the size and sha256 it records (except those named in
        `verified`, checked already). A missing or damaged shard keeps its place and is listed in `damaged`:
        `replace` puts a rebuilt one there.
        """
        objects = {o.key for o in self.store.list(self.folder + "/")}
        for split in self.splits.values():
            while (key := f"{self.folder}/{split.name}-{len(split.receipts):06d}.json") in objects:
                try:
                    receipt = json.loads(self.store.get(key))
                except (ValueError, StorageError):
                    break  # an unreadable receipt: redo its shard and everything after
                split.receipts.append(receipt)
        unchecked = [
            (split, index, r)
            for split in self.splits.values()
            for index, r in enumerate(split.receipts)
            if r.get("name") is not None and r["name"] not in verified
        ]
        problems = verify_shards(self.store, [(r["name"], r["sha256"], r["bytes"]) for _, _, r in unchecked])
        self.damaged = [(split, i, why) for (split, i, _), why in zip(unchecked, problems, strict=True) if why]
        whole = sum(1 for split in self.splits.values() for r in split.receipts if r.get("name"))
        return whole - len(self.damaged)

    def replace(self, split: SplitState, index: int, writer: ShardWriter) -> None:
        """Upload a rebuilt shard in place of damaged shard `index` of `split`."""
        receipt = split.receipts[index]
        f, size, sha256 = writer.finish()
        if sha256 != receipt["sha256"]:
            # Shards are a pure function of the inputs, so this means a file changed without changing its
            # size or mtime (which the fingerprint reads): keep what the source holds now.
            log.warning("rebuilt %s differs from the shard first written there", self.store.url(receipt["name"]))
            receipt.update(samples=writer.samples, bytes=size, sha256=sha256)
        self.wait()
        self._pending = self._uploader.submit(self._upload, (receipt["name"], f, size, sha256), receipt)

    def bad_images(self) -> list[list[str]]:
        """[name, reason, kind] of every bad image so far: those in receipts, then those of the open shards."""
        recorded = [b for s in self.splits.values() for r in s.receipts for b in r["bad"]]
        return recorded + [b for s in self.splits.values() for b in s.bad]

    def add(self, split: SplitState, i: int, key: str, files: dict[str, bytes], digest: tuple[str, str]) -> None:
        """Append a sample, first closing the open shard when the sample would push it over the size bound;
        `digest` is (pixel digest, name), kept in the shard's receipt."""
        if split.writer is not None and split.writer.samples and split.writer.size_with(files) > self.max_bytes:
            self.close(split, end=i)
        if split.writer is None:
            split.writer = ShardWriter()
        split.writer.add(key, files)
        split.digests[digest[0]] = digest[1]

    def close(self, split: SplitState, end: int) -> None:
        """Upload the open shard (if any sample) and its receipt, covering source indices up to `end`."""
        index = len(split.receipts)
        receipt: dict[str, Any] = {"name": None, "split": split.name, "index": index, "samples": 0, "bytes": 0}
        receipt.update(sha256=None, end=end, bad=split.bad, digests=split.digests)
        upload = None
        if split.writer is not None and split.writer.samples:
            name = f"{self.folder}/{split.name}-{index:06d}.tar"
            upload = (name, *split.writer.finish())
            receipt.update(name=name, samples=split.writer.samples, bytes=upload[2], sha256=upload[3])
        elif not split.bad:
            split.writer = None
            return
        self.wait()  # at most one upload in flight: memory stays bounded, errors surface early
        self._pending = self._uploader.submit(self._upload, upload, receipt)
        split.receipts.append(receipt)
        split.writer, split.bad, split.digests = None, [], {}

    def _upload(self, upload: tuple[str, BinaryIO, int, str] | None, receipt: dict[str, Any]) -> None:
        """The shard, a check of its stored size, then its receipt (so a receipt always means a whole shard)."""
        if upload is not None:
            name, f, size, _ = upload
            with f:
                self.store.put(name, f, size)
            found = self.store.stat(name)
            if found is None or found.size != size:
                raise StorageError(f"{self.store.url(name)}: uploaded {size} bytes but the store has {found}")
        key = f"{self.folder}/{receipt['split']}-{receipt['index']:06d}.json"
        self.store.put(key, json.dumps(receipt).encode())

    def wait(self) -> None:
        """Block until the upload in flight (if any) is done; re-raises its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def shutdown(self) -> None:
        """Finish the upload in flight and stop the upload thread."""
        try:
            self.wait()
        finally:
            self._uploader.shutdown(wait=True)
