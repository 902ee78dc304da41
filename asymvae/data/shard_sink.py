"""Writing the shards of each split in order, with a receipt per finished shard so an interrupted run can resume."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from asymvae.data.shards import ShardWriter
from asymvae.storage import StorageError, Store

SPLITS = ("train", "val")


@dataclass
class SplitState:
    """Writer state of one split: finished shard receipts, the open shard, bad images since the last shard."""

    name: str
    receipts: list[dict[str, Any]] = field(default_factory=list)
    writer: ShardWriter | None = None
    bad: list[list[str]] = field(default_factory=list)

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
        # Uploads run on one background thread, in order, one at a time: the next shard fills meanwhile.
        self._uploader = ThreadPoolExecutor(1, thread_name_prefix="shard-upload")
        self._pending: Future | None = None

    def resume(self) -> int:
        """Adopt the finished shards of an interrupted run with the same fingerprint; returns how many."""
        objects = {o.key: o.size for o in self.store.list(self.folder + "/")}
        reused = 0
        for split in self.splits.values():
            index = 0
            while (key := f"{self.folder}/{split.name}-{index:06d}.json") in objects:
                try:
                    receipt = json.loads(self.store.get(key))
                except (ValueError, StorageError):
                    break
                if receipt.get("name") is not None and objects.get(receipt["name"]) != receipt["bytes"]:
                    break  # the shard is missing or partial: redo it and everything after
                split.receipts.append(receipt)
                index += 1
            reused += sum(1 for r in split.receipts if r.get("name"))
        return reused

    def bad_images(self) -> list[list[str]]:
        """[name, reason, kind] of every bad image so far: those in receipts, then those of the open shards."""
        recorded = [b for s in self.splits.values() for r in s.receipts for b in r["bad"]]
        return recorded + [b for s in self.splits.values() for b in s.bad]

    def add(self, split: SplitState, i: int, key: str, files: dict[str, bytes]) -> None:
        """Append a sample, first closing the open shard when the sample would push it over the size bound."""
        if split.writer is not None and split.writer.samples and split.writer.size_with(files) > self.max_bytes:
            self.close(split, end=i)
        if split.writer is None:
            split.writer = ShardWriter()
        split.writer.add(key, files)

    def close(self, split: SplitState, end: int) -> None:
        """Upload the open shard (if any sample) and its receipt, covering source indices up to `end`."""
        index = len(split.receipts)
        receipt: dict[str, Any] = {"name": None, "split": split.name, "index": index, "samples": 0, "bytes": 0}
        receipt.update(sha256=None, end=end, bad=split.bad)
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
        split.writer, split.bad = None, []

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
