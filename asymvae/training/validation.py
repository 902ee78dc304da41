"""The validation grid of a training run: a few fixed masked images decoded by the model as it trains.

The images are the first `train.validation_images` samples of the prepared dataset's validation split, each
with the mask stored beside it (held out from training); a prepared dataset without a validation split, and a
plain data source, give their first training images instead (centre-cropped, masks from the run's mask mix
and seed). Each row of the grid shows input, masked input, decoded and error (|decoded - input|, x4).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from PIL import Image

from asymvae.data.dataset import TrainImages
from asymvae.data.images import decode_image
from asymvae.data.manifest import load_manifest
from asymvae.data.shards import iter_split
from asymvae.data.streaming import ShardStream
from asymvae.data.transforms import center_square, to_tensor
from asymvae.masks import mask_tensor
from asymvae.model.trainable import Reconstructor
from asymvae.training.experiment import ExperimentConfig

log = logging.getLogger(__name__)

ERROR_GAIN = 4.0
"""The error column shows |decoded - input| times this, so small errors stay visible."""


def validation_batch(cfg: ExperimentConfig, dataset: TrainImages | ShardStream) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation images of a run, as (pixels (N, 3, R, R) on [-1, 1], masks (N, 1, R, R), 1 = hole).

    `dataset` is the run's training dataset (its images are used for a plain data source)."""
    res, count, seed = cfg.data.resolution, cfg.train.validation_images, cfg.train.seed
    pixels, masks = [], []
    if cfg.data.shards:
        manifest, _ = load_manifest(cfg.data.shards)
        split = "val" if "val" in manifest.splits and manifest.samples("val") else "train"
        log.info("reading %d validation images (split %s) from %s", count, split, cfg.data.shards)
        for i, sample in enumerate(itertools.islice(iter_split(cfg.data.shards, split), count)):
            pixels.append(to_tensor(center_square(sample.image, res)))
            if sample.mask is not None:
                hole = center_square(Image.fromarray(sample.mask), res, Image.Resampling.NEAREST)
                masks.append(torch.from_numpy(np.asarray(hole, dtype=np.float32))[None])
            else:
                masks.append(mask_tensor(cfg.masks, res, res, seed, i))
    elif isinstance(dataset, TrainImages):
        for i, index in enumerate(dataset.good[:count]):
            image = decode_image(dataset.source.load(index), cfg.data.effective_min_side)
            pixels.append(to_tensor(center_square(image, res)))
            masks.append(mask_tensor(cfg.masks, res, res, seed, i))
    return torch.stack(pixels), torch.stack(masks)


def validation_grid(model: Reconstructor, pixels: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Decode `pixels` under `masks` with `model` (deterministically) and lay out one row per image: input,
    masked input (holes grey), decoded, error. Returns an (H x N, W x 4, 3) uint8 image."""
    decoded = model.reconstruct(pixels, masks).float().clamp(-1.0, 1.0)
    pixels, masks = pixels.float(), masks.float()
    masked = pixels * (1.0 - masks)  # holes at 0, mid-grey
    error = ((decoded - pixels).abs() * ERROR_GAIN - 1.0).clamp(-1.0, 1.0)
    rows = torch.cat([pixels, masked, decoded, error], dim=3)  # (N, 3, H, 4W)
    grid = torch.cat(list(rows), dim=1)  # (3, N*H, 4W)
    return ((grid + 1.0) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
