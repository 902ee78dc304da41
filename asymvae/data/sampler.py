"""A distributed batch sampler whose position is part of the checkpoint.

Every rank draws the same global permutation per epoch (seeded by seed + epoch) and takes its own
slice of each global batch, so ranks see disjoint data and a resumed run continues at exactly the next
global batch: no sample is repeated or skipped. Incomplete global batches at the end of an epoch are
dropped, so every rank always runs the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class ResumableBatchSampler:
    """Yields per-rank batches of (epoch, index) keys, forever; `advance()` records consumption."""

    def __init__(self, size: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.size = size
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.global_batch = batch_size * num_replicas
        if size < self.global_batch:
            raise ValueError(
                f"the data has {size} usable images, fewer than one global batch of {self.global_batch} "
                f"({batch_size} per process x {num_replicas} processes): add images or lower train.batch_size"
            )
        self.epoch = 0
        self.consumed = 0  # global samples consumed in the current epoch

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch."""
        return self.size // self.global_batch

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.consumed
        while True:
            perm = self._permutation(epoch)
            for b in range(start // self.global_batch, self.batches_per_epoch):
                lo = b * self.global_batch + self.rank * self.batch_size
                yield [(epoch, i) for i in perm[lo : lo + self.batch_size]]
            epoch, start = epoch + 1, 0

    def advance(self, batch: object = None) -> None:
        """Mark one global batch as consumed (call once per micro-step, after using its data)."""
        self.consumed += self.global_batch
        if self.consumed // self.global_batch >= self.batches_per_epoch:
            self.epoch, self.consumed = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Position for the checkpoint."""
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "size": self.size,
            "global_batch": self.global_batch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; refuses a checkpoint made with different data or batch geometry."""
        if state["size"] != self.size or state["global_batch"] != self.global_batch:
            raise ValueError(
                f"checkpoint was made with {state['size']} images and global batch {state['global_batch']}, "
                f"this run has {self.size} and {self.global_batch}: resuming would replay or skip data. "
                "Resume with the same data, batch size and number of processes."
            )
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
