"""Streaming the train split of prepared shards into training, with a position that survives any layout.

Readers are *slots*: one per DataLoader worker of each rank (`slots = world_size x max(1, num_workers)`).
Each epoch, the samples still to be read are dealt to the slots by a `Plan` (`asymvae.data.stream_plan`):
contiguous runs of the epoch's seeded shard sequence, read in blocks of `data.shuffle_buffer` that are
shuffled with a seeded generator; crops and masks are seeded by (seed, epoch, the sample's ordinal), as in
the map-style `TrainImages`.

The position is, per slot, the epoch and the number of samples of that epoch consumed by training (each
batch carries its slot and position), plus the number of batches each rank consumed (the DataLoader takes
batches from its workers in turn, so after a resume the worker whose turn it is takes over the slot that
was due). Resumed with the same number of processes and workers, every slot continues its stream exactly:
the run sees the samples, in the order, an uninterrupted run would (same manifest, seed, batch size and
`shuffle_buffer`). Resumed with another number of processes or workers (an elastic restart), or another
`shuffle_buffer`, what each epoch has left is dealt to the new slots: no sample is repeated or skipped.
A different manifest or seed is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from asymvae.data.config import DataConfig
from asymvae.data.manifest import Manifest, ShardInfo, load_manifest
from asymvae.data.sampler import PositionError
from asymvae.data.shards import iter_counted, record_image, record_meta
from asymvae.data.sources import DataSourceError
from asymvae.data.stream_plan import Plan, Progress
from asymvae.data.transforms import crop_and_resize, to_tensor
from asymvae.masks import MaskConfig, mask_tensor
from asymvae.storage import Store

log = logging.getLogger(__name__)

Record = tuple[str, dict[str, bytes]]
"""Where a record is (shard and key, for messages) and its members."""


class StreamPosition:
    """The plan, per slot: (epoch, samples of it consumed), per rank: batches consumed. Checkpointed via
    `TrainState`.

    The batch count matters because a DataLoader takes batches from its workers round-robin: a resumed
    loader must start with the worker whose turn it was, so each worker takes over the slot that was then
    in that turn.
    """

    def __init__(self, plan: Plan, dataset: dict[str, Any], world_size: int = 1, rank: int = 0) -> None:
        self.plan = plan
        self.dataset = dataset
        self.world_size = world_size
        self.rank = rank
        self.slots: Progress = {}
        self.batches: dict[int, int] = {}

    def advance(self, batch: dict[str, Any] | None = None) -> None:
        """Record the samples of a batch the training step consumed (the last one of each slot counts)."""
        if batch is None:
            return
        self.batches[self.rank] = self.batches.get(self.rank, 0) + 1
        for slot, epoch, pos in zip(
            batch["slot"].tolist(), batch["epoch"].tolist(), batch["pos"].tolist(), strict=True
        ):
            if (epoch, pos + 1) > self.slots.get(slot, (self.plan.start, 0)):
                self.slots[slot] = (epoch, pos + 1)

    @property
    def epoch(self) -> int:
        """The epoch every slot has reached."""
        return min((e for e, _ in self.slots.values()), default=self.plan.start)

    def state_dict(self) -> dict[str, Any]:
        """The plan and the positions of all slots of all ranks (every rank calls this during a checkpoint)."""
        slots, batches = dict(self.slots), dict(self.batches)
        if self.world_size > 1:
            from accelerate.utils import gather_object

            for part_slots, part_batches in gather_object([(slots, batches)]):
                slots.update(part_slots)
                batches.update(part_batches)
        return {
            "dataset": self.dataset,
            "plan": self.plan.state_dict(),
            "progress": {str(k): list(v) for k, v in sorted(slots.items())},
            "batches": {str(k): v for k, v in sorted(batches.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position: exactly, or re-planned when the slots changed.

        Raises PositionError for a position of another dataset or seed (it would replay or skip data).
        """
        if state.get("dataset") != self.dataset:
            raise PositionError(
                f"the checkpoint's data position belongs to {state.get('dataset', 'an older asymvae')}, this run has "
                f"{self.dataset}: resuming would replay or skip samples. Fix: resume with the same data.shards "
                "manifest and train.seed, or start a new run (another --output)."
            )
        saved = Plan.from_state(self.plan.sizes, self.plan.seed, state["plan"])
        progress = {int(k): (int(v[0]), int(v[1])) for k, v in state["progress"].items()}
        if (saved.slots, saved.shuffle_buffer) == (self.plan.slots, self.plan.shuffle_buffer):
            self.plan, self.slots = saved, progress
            self.batches = {int(k): int(v) for k, v in state["batches"].items()}
            return
        self.plan = saved.replan(progress, self.plan.slots, self.plan.shuffle_buffer)
        self.slots, self.batches = {}, {}
        left = int((~self.plan.done[self.plan.start]).sum()) if self.plan.start in self.plan.done else self.plan.total
        log.info(
            "data readers changed from %d to %d (or the shuffle buffer): the %d samples left of epoch %d are "
            "dealt to the new readers",
            saved.slots,
            self.plan.slots,
            left,
            self.plan.start,
        )


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
                f"({world_size} processes x {self.workers} workers): lower --data.num-workers or prepare more images"
            )
        plan = Plan([s.samples for s in self.shards], seed, self.num_slots, data.shuffle_buffer)
        dataset = {"fingerprint": manifest.fingerprint, "seed": seed}
        self.position = StreamPosition(plan, dataset, world_size, rank)

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

    # -- reading -----------------------------------------------------------------------------------

    def _records(self, epoch: int, positions: np.ndarray) -> Iterator[Record]:
        """The records at `positions` (ascending) of `epoch`'s sequence, in that order. Each shard is fetched
        once, the next one while this one is read."""
        order = self.position.plan.shard_order(epoch)
        starts = np.concatenate([[0], np.cumsum([self.shards[j].samples for j in order])])
        which = np.searchsorted(starts, positions, side="right") - 1  # ascending, as the positions are
        runs, firsts = np.unique(which, return_index=True)
        ends = [*firsts[1:], len(positions)]
        groups = [
            (self.shards[order[j]], positions[a:b] - starts[j]) for j, a, b in zip(runs, firsts, ends, strict=True)
        ]
        with ThreadPoolExecutor(1) as pool:
            ahead: Future | None = None
            for k, (shard, wanted) in enumerate(groups):
                current = ahead or pool.submit(self._fetch, shard)
                ahead = pool.submit(self._fetch, groups[k + 1][0]) if k + 1 < len(groups) else None
                yield from self._pick(shard, current.result(), set(wanted.tolist()))

    def _fetch(self, shard: ShardInfo) -> bytes:
        return self.store.get_verified(shard.name, shard.sha256, shard.bytes)

    def _pick(self, shard: ShardInfo, data: bytes, wanted: set[int]) -> Iterator[Record]:
        where = self.store.url(shard.name)
        for r, (key, files) in enumerate(iter_counted(data, where, shard.samples)):
            if r in wanted:
                yield f"{where}, record {key}", files

    def _epoch(self, slot: int, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        plan = self.position.plan
        chunk, size = plan.chunk(epoch, slot), plan.shuffle_buffer
        first = start // size
        records = self._records(epoch, chunk[first * size :])
        for b in range(first, -(-len(chunk) // size)):
            block = [next(records) for _ in range(len(chunk[b * size : (b + 1) * size]))]
            for j, k in enumerate(plan.block_order(epoch, slot, b, len(block))):
                if b * size + j >= start:
                    yield self._sample(block[k], slot, epoch, b * size + j)

    def _sample(self, record: Record, slot: int, epoch: int, pos: int) -> dict[str, Any]:
        where, files = record
        ordinal = int(record_meta(files, where)["ordinal"])
        image = record_image(files, where)
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
        epoch, start = self.position.slots.get(slot, (self.position.plan.start, 0))
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
