"""The training dataset: validated images from a source, cropped, with their inpainting masks."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from asymvae.data.config import DataConfig
from asymvae.data.images import BadImageError, decode_image
from asymvae.data.sources import ImageSource
from asymvae.data.transforms import crop_and_resize, to_tensor
from asymvae.masks import MaskConfig, mask_tensor

log = logging.getLogger(__name__)


class TrainImages(Dataset):
    """Maps a sampler key (epoch, i) to {"pixels", "mask", "index"}; i indexes the images that passed the scan.

    Augmentation and mask depend only on (seed, epoch, image), never on worker or RNG state, so a resumed
    run sees exactly the samples an uninterrupted one would.
    """

    def __init__(self, source: ImageSource, good: list[int], data: DataConfig, masks: MaskConfig, seed: int) -> None:
        self.source = source
        self.good = good
        self.data = data
        self.masks = masks
        self.seed = seed

    def __len__(self) -> int:
        return len(self.good)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        epoch, i = key
        for attempt in range(len(self.good)):
            j = (i + attempt) % len(self.good)
            try:
                image = decode_image(self.source.load(self.good[j]), self.data.effective_min_side)
                break
            except BadImageError as e:
                # Passed the scan, fails now (changed on disk?): substitute the next image, loudly.
                log.warning("skipping %s at load time: %s", self.source.name(self.good[j]), e.reason)
        else:
            raise RuntimeError(f"no image of {self.source.description} can be decoded any more")
        rng = np.random.default_rng([self.seed, epoch, self.good[j], 0])
        pixels = to_tensor(crop_and_resize(image, self.data, rng))
        res = self.data.resolution
        mask = mask_tensor(self.masks, res, res, self.seed, epoch * len(self.good) + j)
        return {"pixels": pixels, "mask": mask, "index": self.good[j]}
