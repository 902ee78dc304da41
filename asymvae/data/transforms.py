"""Per-sample crop, resize and flip, driven by an explicit random generator (so resume is exact)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from asymvae.data.config import DataConfig


def _cover_size(w: int, h: int, res: int) -> tuple[int, int]:
    """The size that scales (w, h) so the short side is `res`."""
    scale = res / min(w, h)
    return max(res, round(w * scale)), max(res, round(h * scale))


def center_square(image: Image.Image, res: int, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
    """Scale so the short side is `res`, then take the centred `res`² square (the `center` crop).

    Masks go through the same with `resample=NEAREST`, so they stay aligned with their image and binary.
    """
    size = _cover_size(*image.size, res)
    x0, y0 = (size[0] - res) // 2, (size[1] - res) // 2
    return image.resize(size, resample).crop((x0, y0, x0 + res, y0 + res))


def crop_and_resize(image: Image.Image, cfg: DataConfig, rng: np.random.Generator) -> Image.Image:
    """A square `cfg.resolution` crop of an RGB image, per `cfg.crop`, flipped per `cfg.hflip`."""
    res = cfg.resolution
    w, h = image.size
    short = min(w, h)
    if cfg.crop == "random_scale":
        side = max(1, round(short * rng.uniform(cfg.crop_scale_min, 1.0)))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        out = image.resize((res, res), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side))
    elif cfg.crop == "center":
        out = center_square(image, res)
    else:
        size = _cover_size(w, h, res)
        x0 = int(rng.integers(0, size[0] - res + 1))
        y0 = int(rng.integers(0, size[1] - res + 1))
        out = image.resize(size, Image.Resampling.BICUBIC).crop((x0, y0, x0 + res, y0 + res))
    if cfg.hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] from an RGB image."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()
