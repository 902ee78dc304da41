"""What evaluation reads: held-out images with their fixed masks, as a stream of `EvalItem`s.

The input protocol is deliberately small: any iterable of `EvalItem` (a key, an image on [0, 1], a mask
with 1 = hole) can be scored. `SourceItems` makes one from any training data source (a folder, a
dataset, `builtin:demo`) with masks drawn from a fixed seed; `ShardItems` from the validation split of a
dataset made by `asymvae prepare`, with the masks stored there. `eval_items` picks the right one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from asymvae.data.config import DataConfig
from asymvae.data.images import as_bad_image, decode_image
from asymvae.data.manifest import is_prepared_dataset, load_manifest
from asymvae.data.shards import iter_split
from asymvae.data.sources import DataSourceError, open_source
from asymvae.data.transforms import center_square, crop_and_resize, to_tensor
from asymvae.evaluation.config import EVAL_MASK_SEED
from asymvae.masks import MaskConfig, eval_mask_config, mask_tensor

log = logging.getLogger(__name__)

__all__ = ["EvalItem", "ShardItems", "SourceItems", "batches", "eval_items"]


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
        self.mask_seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[EvalItem]:
        res = self.data.resolution
        rng = np.random.default_rng(0)  # centre crops without flips draw nothing; the signature needs one
        for i in range(len(self.source)):
            try:
                image = decode_image(self.source.load(i), self.data.effective_min_side)
            except Exception as e:
                log.warning("skipping %s: %s", self.source.name(i), as_bad_image(e).reason)
                continue
            pixels = to_tensor(crop_and_resize(image, self.data, rng)).add(1.0).div(2.0).clamp(0.0, 1.0)
            yield EvalItem(self.source.name(i), pixels, mask_tensor(self.masks, res, res, self.mask_seed, i))


class ShardItems:
    """The validation split of a dataset made by `asymvae prepare`, each image with the mask stored beside it.

    Image and mask get the same centre crop (`center_square`; nearest-neighbour for the mask), so every
    evaluation of every model on this dataset scores the very same pixels under the very same holes.
    """

    def __init__(self, uri: str, resolution: int, split: str = "val", max_images: int | None = None) -> None:
        manifest, _ = load_manifest(uri)  # a missing or invalid dataset fails here, before any model loads
        if split not in manifest.splits:
            raise DataSourceError(f"{uri} has no split {split!r}; it has {', '.join(sorted(manifest.splits))}")
        available = manifest.samples(split)
        if available == 0:
            raise DataSourceError(
                f"{uri} has no {split} samples. Fix: prepare it with --prepare.val-fraction <share above 0>."
            )
        self.uri, self.split, self.resolution = uri, split, resolution
        self.count = min(available, max_images) if max_images else available
        self.mask_seed = int(manifest.config.get("mask_seed", 0))
        """Seed prepare drew the stored masks from (for the report)."""

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[EvalItem]:
        res = self.resolution
        for sample in itertools.islice(iter_split(self.uri, self.split), self.count):
            if sample.mask is None:
                raise DataSourceError(f"{self.uri}: sample {sample.key} of split {self.split} has no stored mask")
            image = to_tensor(center_square(sample.image, res)).add(1.0).div(2.0).clamp(0.0, 1.0)
            hole = center_square(Image.fromarray(sample.mask), res, Image.Resampling.NEAREST)
            mask = torch.from_numpy(np.asarray(hole, dtype=np.float32))[None]
            yield EvalItem(str(sample.meta.get("source", sample.key)), image, mask)


def eval_items(spec: str, resolution: int, split: str, max_images: int | None, seed: int) -> SourceItems | ShardItems:
    """The held-out items of `spec`: a prepared dataset's stored validation samples and masks, or any data
    source's images with masks drawn from `seed`. `split` `validation` means a prepared dataset's `val`."""
    if is_prepared_dataset(spec):
        return ShardItems(spec, resolution, "val" if split == "validation" else split, max_images)
    return SourceItems(spec, resolution, split, max_images, seed=seed)


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
