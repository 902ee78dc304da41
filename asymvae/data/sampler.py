"""A distributed batch sampler whose position is part of the checkpoint, and survives a change of layout.

The data is one endless sequence: epoch 0's seeded permutation of the images, then epoch 1's, and so on.
Training consumes it from the front, one global batch (`batch_size` x processes) at a time, rank r taking
its slice of each; the position is the number of samples consumed, whatever the number of processes that
consumed them. A run resumed with another number of processes (an elastic PyTorchJob restarted on fewer
or more nodes) therefore continues at the very next sample: nothing is repeated or skipped, and every
image is seen exactly once per epoch. Batches run across epoch boundaries; none is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from asymvae.errors import UserError


class PositionError(UserError, ValueError):
    """A checkpoint's data position this run cannot continue from (other data, another batch size)."""


class TooFewImagesError(UserError, ValueError):
    """The data holds fewer images than one global batch."""


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
            raise TooFewImagesError(
                f"the data has {size} usable images, fewer than one global batch of {self.global_batch} "
                f"({batch_size} per process x {num_replicas} processes). Fix: add images, or lower "
                f"train.batch_size to at most {size // num_replicas}."
            )
        self.cursor = 0
        """Samples of the endless sequence consumed by training, all ranks together."""

    @property
    def epoch(self) -> int:
        """The epoch the next sample belongs to."""
        return self.cursor // self.size

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.cursor + self.rank * self.batch_size
        perms: dict[int, list[int]] = {}
        while True:
            batch = []
            for p in range(position, position + self.batch_size):
                epoch, offset = divmod(p, self.size)
                if epoch not in perms:
                    perms = {e: v for e, v in perms.items() if e >= epoch - 1}  # at most two in memory
                    perms[epoch] = self._permutation(epoch)
                batch.append((epoch, perms[epoch][offset]))
            yield batch
            position += self.global_batch

    def advance(self, batch: object = None) -> None:
        """Mark one global batch as consumed (call once per micro-step, after using its data)."""
        self.cursor += self.global_batch

    def state_dict(self) -> dict[str, Any]:
        """Position for the checkpoint."""
        return {"cursor": self.cursor, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; refuses one made on other data, where it would replay or skip images."""
        if "cursor" not in state:
            raise PositionError(
                "the checkpoint's data position was written by an older asymvae, which cannot be continued "
                "exactly. Fix: start a new run (another --output), initialised from this run's last export."
            )
        if state["size"] != self.size or state["seed"] != self.seed:
            raise PositionError(
                f"the checkpoint was made on {state['size']} usable images with train.seed={state['seed']}, this "
                f"run has {self.size} with train.seed={self.seed}: resuming would replay or skip images. Fix: "
                "resume with the same data (and bad-image settings) and seed, or start a new run (another --output)."
            )
        self.cursor = int(state["cursor"])
