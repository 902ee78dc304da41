"""Which reader reads which samples of prepared shards, in terms that do not depend on the readers.

Epoch e's train samples form one sequence: the shards in a seeded order, each shard's records in file
order; a *position* is an index into that sequence. A `Plan` deals the positions of an epoch still to be
read to `slots` readers (one per DataLoader worker of each rank) in contiguous chunks of nearly equal size,
so each reader streams a run of whole shards; a reader takes its chunk in blocks of `shuffle_buffer`, each
block in a seeded random order. Everything is a pure function of the seed, the shard sizes and the plan.

What training has consumed is kept per reader as (epoch, samples of it consumed), which continues the
same plan exactly. When the readers change (another number of processes or workers), `consumed` turns
that progress into the set of positions consumed per epoch, and `replan` deals what remains of each epoch
to the new readers: no sample is read twice or skipped across the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Progress = dict[int, tuple[int, int]]
"""Per slot: (epoch, samples of that epoch's stream consumed)."""


@dataclass
class Plan:
    """The chunks and block orders of every epoch, for `slots` readers."""

    sizes: list[int]
    """Samples of each train shard, in manifest order."""
    seed: int
    slots: int
    shuffle_buffer: int
    start: int = 0
    """The first epoch of this plan: every slot starts there."""
    done: dict[int, np.ndarray] = field(default_factory=dict)
    """Per epoch: which positions were consumed before this plan took over (bool); those are not dealt."""

    @property
    def total(self) -> int:
        """Samples per epoch."""
        return sum(self.sizes)

    def shard_order(self, epoch: int) -> np.ndarray:
        """Indices of the shards (manifest order) in the order of `epoch`'s sequence."""
        return np.random.default_rng([self.seed, epoch, 0x5A4D]).permutation(len(self.sizes))

    def chunk(self, epoch: int, slot: int) -> np.ndarray:
        """The positions (ascending) that `slot` reads in `epoch`."""
        done = self.done.get(epoch)
        remaining = np.arange(self.total) if done is None else np.flatnonzero(~done)
        n = len(remaining)
        return remaining[slot * n // self.slots : (slot + 1) * n // self.slots]

    def block_order(self, epoch: int, slot: int, block: int, length: int) -> np.ndarray:
        """The order in which `slot` yields the `length` samples of its block `block` of `epoch`."""
        return np.random.default_rng([self.seed, epoch, slot, block, 0x5348]).permutation(length)

    def stream(self, epoch: int, slot: int) -> np.ndarray:
        """The positions in the order `slot` yields them in `epoch`."""
        chunk, size = self.chunk(epoch, slot), self.shuffle_buffer
        blocks = [chunk[b : b + size] for b in range(0, len(chunk), size)]
        ordered = [block[self.block_order(epoch, slot, k, len(block))] for k, block in enumerate(blocks)]
        return np.concatenate(ordered) if ordered else chunk

    def consumed(self, progress: Progress) -> dict[int, np.ndarray]:
        """Per epoch from `start` to the furthest any slot reached: the positions consumed (bool)."""
        ends = {slot: progress.get(slot, (self.start, 0)) for slot in range(self.slots)}
        last = max(epoch for epoch, _ in ends.values())
        out = {}
        for epoch in range(self.start, last + 1):
            done = self.done[epoch].copy() if epoch in self.done else np.zeros(self.total, bool)
            for slot, (reached, count) in ends.items():
                if epoch < reached:  # a slot moves on only after its whole chunk
                    done[self.chunk(epoch, slot)] = True
                elif epoch == reached:
                    done[self.stream(epoch, slot)[:count]] = True
            out[epoch] = done
        return out

    def replan(self, progress: Progress, slots: int, shuffle_buffer: int) -> Plan:
        """A plan for `slots` readers that deals what `progress` left of each epoch."""
        consumed = self.consumed(progress)
        start = next((e for e, done in sorted(consumed.items()) if not done.all()), max(consumed) + 1)
        done = {e: d for e, d in consumed.items() if e >= start and d.any()}
        return Plan(self.sizes, self.seed, slots, shuffle_buffer, start, done)

    def state_dict(self) -> dict[str, Any]:
        """The plan's own state (sizes and seed come from the dataset and the run)."""
        return {
            "slots": self.slots,
            "shuffle_buffer": self.shuffle_buffer,
            "start": self.start,
            "done": {str(e): np.packbits(d).tobytes() for e, d in self.done.items()},
        }

    @classmethod
    def from_state(cls, sizes: list[int], seed: int, state: dict[str, Any]) -> Plan:
        """The plan `state_dict` described, on the dataset with shard sizes `sizes`."""
        total = sum(sizes)
        done = {
            int(e): np.unpackbits(np.frombuffer(bits, np.uint8), count=total).astype(bool)
            for e, bits in state["done"].items()
        }
        return cls(sizes, seed, int(state["slots"]), int(state["shuffle_buffer"]), int(state["start"]), done)
