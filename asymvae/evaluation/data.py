"""What evaluation reads: held-out images with their fixed masks, as a stream of `EvalItem`s.

The input protocol is deliberately small: any iterable of `EvalItem` (a key, an image on [0, 1], a mask
with 1 = hole) can be scored. `SourceItems` makes one from any training data source (a folder, a
dataset, `builtin:demo`) with masks drawn from a fixed seed; a prepared dataset that stores its own
validation masks only has to yield the same triples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from asymvae.data.config import DataConfig
from asymvae.data.images import BadImageError, decode_image
from asymvae.data.sources import open_source
from asymvae.data.transforms import crop_and_resize, to_tensor
from asymvae.masks import MaskConfig, eval_mask_config, mask_tensor

log = logging.getLogger(__name__)

__all__ = ["EVAL_MASK_SEED", "EvalItem", "SourceItems", "batches"]

EVAL_MASK_SEED = 20_230_607
"""Seed of the evaluation masks (index = the image's position in the source): every evaluation of every
model on the same source sees the same masks. Different from any training seed."""


@dataclass(frozen=True)
class EvalItem:
    """One held-out sample."""

    key: str
    """Where the image comes from (file path, `dataset[split][row]`), for reports."""
    image: torch.Tensor
    """(3, H, W) float32 on [0, 1]."""
    mask: torch.Tensor
    """(1, H, W) float32, 1 = hole (to generate), 0 = keep. Never all zeros or all ones for the hole metrics
    to mean something; the full-mask case is scored separately."""


class SourceItems:
    """Centre-cropped `resolution`² images of a data source (see `open_source`), each with its fixed mask.

    The source is opened at construction (so a bad source fails at once); iterating decodes the images.
    The split falls back to the source's only split where it has one (plain folders, `builtin:demo`).
    Unreadable images are skipped with a warning; masks are `mask_tensor(masks, H, W, seed, i)` with `i`
    the image's index in the source, so they do not shift when an earlier image is skipped.
    """

    def __init__(
        self,
        spec: str,
        resolution: int,
        split: str = "validation",
        max_images: int | None = None,
        masks: MaskConfig | None = None,
        seed: int = EVAL_MASK_SEED,
    ) -> None:
        self.source = open_source(spec, split=split, max_samples=max_images)
        self.data = DataConfig(source=spec, resolution=resolution, crop="center", hflip=False)
        self.masks = masks or eval_mask_config()
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[EvalItem]:
        res = self.data.resolution
        rng = np.random.default_rng(0)  # centre crops without flips draw nothing; the signature needs one
        for i in range(len(self.source)):
            try:
                image = decode_image(self.source.load(i), self.data.effective_min_side)
            except BadImageError as e:
                log.warning("skipping %s: %s", self.source.name(i), e.reason)
                continue
            pixels = to_tensor(crop_and_resize(image, self.data, rng)).add(1.0).div(2.0).clamp(0.0, 1.0)
            yield EvalItem(self.source.name(i), pixels, mask_tensor(self.masks, res, res, self.seed, i))


def batches(items: Iterable[EvalItem], batch_size: int) -> Iterator[list[EvalItem]]:
    """Consecutive lists of up to `batch_size` items."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    batch: list[EvalItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
