"""Streaming the train split of prepared shards into training, with an exactly resumable position.

Work is split into *slots*: one per DataLoader worker of each rank (`slots = world_size x max(1,
num_workers)`). Each epoch, the train shards are put in a seeded random order and dealt round-robin to the
slots (with fewer shards than slots, every slot reads every shard and keeps every `slots`-th sample).
A slot reads its records in that order in blocks of `data.shuffle_buffer`, shuffles each block with a
generator seeded by (seed, epoch, slot, block) and yields its samples; crops and masks are seeded by
(seed, epoch, the sample's ordinal), as in the map-style `TrainImages`.

So a slot's stream is a pure function of (manifest, seed, layout). The position is, per slot, the epoch
and the number of samples of that epoch consumed by training (each batch carries its slot and position),
plus the number of batches each rank consumed (the DataLoader takes batches from its workers in turn, so
after a resume the worker whose turn it is takes over the slot that was due).
On resume a slot skips whole shards by their sample counts from the manifest, reads the block it was in,
re-shuffles it identically and continues after the last consumed sample: the resumed run sees exactly the
samples, in the order, that an uninterrupted run would have (same manifest, seed, batch size,
`shuffle_buffer`, number of processes and of workers; anything else is refused). Every train sample is
read exactly once per epoch of its slot; slots whose shards hold more samples finish their epoch later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from asymvae.data.config import DataConfig
from asymvae.data.manifest import Manifest, ShardInfo, load_manifest
from asymvae.data.shards import iter_records, record_image
from asymvae.data.sources import DataSourceError
from asymvae.data.transforms import crop_and_resize, to_tensor
from asymvae.masks import MaskConfig, mask_tensor
from asymvae.storage import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Part:
    """Records first, first + step, ... of one shard."""

    shard: ShardInfo
    first: int
    step: int

    @property
    def count(self) -> int:
        return max(0, -(-(self.shard.samples - self.first) // self.step))


class StreamPosition:
    """Per slot: (epoch, samples of that epoch consumed); per rank: batches consumed. Checkpointed via `TrainState`.

    The batch count matters because a DataLoader takes batches from its workers round-robin: a resumed
    loader must start with the worker whose turn it was, so each worker takes over the slot that was then
    in that turn.
    """

    def __init__(self, layout: dict[str, Any], world_size: int = 1, rank: int = 0) -> None:
        self.layout = layout
        self.world_size = world_size
        self.rank = rank
        self.slots: dict[int, tuple[int, int]] = {}
        self.batches: dict[int, int] = {}

    def advance(self, batch: dict[str, Any] | None = None) -> None:
        """Record the samples of a batch the training step consumed (the last one of each slot counts)."""
        if batch is None:
            return
        self.batches[self.rank] = self.batches.get(self.rank, 0) + 1
        for slot, epoch, pos in zip(
            batch["slot"].tolist(), batch["epoch"].tolist(), batch["pos"].tolist(), strict=True
        ):
            if (epoch, pos + 1) > self.slots.get(slot, (0, 0)):
                self.slots[slot] = (epoch, pos + 1)

    @property
    def epoch(self) -> int:
        """The epoch every slot has reached."""
        return min((e for e, _ in self.slots.values()), default=0)

    def state_dict(self) -> dict[str, Any]:
        """Positions of all slots of all ranks (every rank calls this during a checkpoint)."""
        slots, batches = dict(self.slots), dict(self.batches)
        if self.world_size > 1:
            from accelerate.utils import gather_object

            for part_slots, part_batches in gather_object([(slots, batches)]):
                slots.update(part_slots)
                batches.update(part_batches)
        return {
            "layout": self.layout,
            "slots": {str(k): list(v) for k, v in sorted(slots.items())},
            "batches": {str(k): v for k, v in sorted(batches.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; refuses a position made with another dataset or slot layout (it would replay or skip data)."""
        if state["layout"] != self.layout:
            raise ValueError(
                f"the checkpoint's data position was made with {state['layout']}, this run has {self.layout}: "
                "resuming would replay or skip samples. Resume with the same data.shards manifest, seed, "
                "data.shuffle_buffer, data.num_workers and number of processes."
            )
        self.slots = {int(k): (int(v[0]), int(v[1])) for k, v in state["slots"].items()}
        self.batches = {int(k): int(v) for k, v in state["batches"].items()}


class ShardStream(IterableDataset):
    """Yields {"pixels", "mask", "index", "slot", "epoch", "pos"} samples of the train split, forever."""

    def __init__(
        self,
        manifest: Manifest,
        store: Store,
        data: DataConfig,
        masks: MaskConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.data = data
        self.masks = masks
        self.seed = seed
        self.rank = rank
        self.workers = max(1, data.num_workers)
        self.num_slots = world_size * self.workers
        self.shards = manifest.shards_of("train")
        self.size = manifest.samples("train")
        if self.size < self.num_slots:
            raise DataSourceError(
                f"{len(self.shards)} train shards hold {self.size} samples, fewer than the {self.num_slots} readers "
                f"({world_size} processes x {self.workers} workers): lower data.num_workers or prepare more images"
            )
        layout = {
            "fingerprint": manifest.fingerprint,
            "slots": self.num_slots,
            "shuffle_buffer": data.shuffle_buffer,
            "seed": seed,
        }
        self.position = StreamPosition(layout, world_size, rank)

    @classmethod
    def open(cls, uri: str, data: DataConfig, masks: MaskConfig, seed: int, rank: int, world: int) -> ShardStream:
        """From a manifest URI (or its folder), local or s3://."""
        manifest, store = load_manifest(uri)
        log.info(
            "streaming %d train samples in %d shards from %s",
            manifest.samples("train"),
            len(manifest.shards_of("train")),
            store.uri,
        )
        return cls(manifest, store, data, masks, seed, rank, world)

    # -- the deterministic plan --------------------------------------------------------------------

    def plan(self, slot: int, epoch: int) -> list[_Part]:
        """What slot `slot` reads in `epoch`, in order."""
        order = np.random.default_rng([self.seed, epoch, 0x5A4D]).permutation(len(self.shards))
        shards = [self.shards[j] for j in order]
        if len(shards) >= self.num_slots:
            return [_Part(s, 0, 1) for s in shards[slot :: self.num_slots]]
        parts, offset = [], 0
        for s in shards:  # every slot reads every shard and keeps every num_slots-th sample of the epoch
            parts.append(_Part(s, (slot - offset) % self.num_slots, self.num_slots))
            offset += s.samples
        return [p for p in parts if p.count]

    def _records(self, parts: list[_Part], skip: int) -> Iterator[dict[str, bytes]]:
        """The records of `parts` in order, the first `skip` left out (whole shards without reading them)."""
        todo = []
        for part in parts:
            if skip >= part.count:
                skip -= part.count
                continue
            todo.append((part, skip))
            skip = 0
        with ThreadPoolExecutor(1) as pool:  # download the next shard while this one is consumed
            ahead: Future | None = None
            for k, (part, drop) in enumerate(todo):
                current = ahead or pool.submit(self._fetch, part.shard)
                ahead = pool.submit(self._fetch, todo[k + 1][0].shard) if k + 1 < len(todo) else None
                records = iter_records(current.result())
                for r, (_, files) in enumerate(records):
                    if r >= part.first and (r - part.first) % part.step == 0:
                        if drop:
                            drop -= 1
                        else:
                            yield files

    def _fetch(self, shard: ShardInfo) -> bytes:
        return self.store.get_verified(shard.name, shard.sha256, shard.bytes)

    def _epoch(self, slot: int, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        block = self.data.shuffle_buffer
        first_block = start // block
        pos = first_block * block
        records = self._records(self.plan(slot, epoch), pos)
        b = first_block
        while True:
            chunk = [r for _, r in zip(range(block), records, strict=False)]
            if not chunk:
                return
            order = np.random.default_rng([self.seed, epoch, slot, b, 0x5348]).permutation(len(chunk))
            for j in order:
                if pos >= start:
                    yield self._sample(chunk[j], slot, epoch, pos)
                pos += 1
            b += 1

    def _sample(self, files: dict[str, bytes], slot: int, epoch: int, pos: int) -> dict[str, Any]:
        meta = json.loads(files["json"])
        ordinal = int(meta["ordinal"])
        image = record_image(files)
        rng = np.random.default_rng([self.seed, epoch, ordinal, 0])
        res = self.data.resolution
        return {
            "pixels": to_tensor(crop_and_resize(image, self.data, rng)),
            "mask": mask_tensor(self.masks, res, res, self.seed, epoch * self.size + ordinal),
            "index": ordinal,
            "slot": slot,
            "epoch": epoch,
            "pos": pos,
        }

    def slot_stream(self, slot: int) -> Iterator[dict[str, Any]]:
        """The infinite stream of one slot, from its saved position."""
        epoch, start = self.position.slots.get(slot, (0, 0))
        while True:
            yield from self._epoch(slot, epoch, start)
            epoch, start = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            raise RuntimeError(f"DataLoader has {info.num_workers} workers, the stream was planned for {self.workers}")
        turn = self.position.batches.get(self.rank, 0) % self.workers  # whose turn it is after a resume
        return self.slot_stream(self.rank * self.workers + (worker + turn) % self.workers)
