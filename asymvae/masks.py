"""LaMa-style inpainting masks for training the mask-conditioned branch of the asymmetric decoder.

A mask marks the pixels to be generated with 1 (the hole) and the pixels to keep with 0. Each mask is
either all ones (the branch sees nothing of the image), a set of irregular thick strokes
(LaMa's `make_random_irregular_mask`) or a set of rectangles (LaMa's `make_random_rectangle_mask`).

Masks are a pure function of `(cfg, height, width, seed, index)`: nothing is read from global random
state, so any worker process, rank or restarted run rebuilds exactly the same mask. To vary masks over
epochs, fold the epoch into `index` yourself (e.g. `index = epoch * len(dataset) + i`); `seed` and
`index` are the only sources of randomness.

Geometry is given at `reference_resolution` and scaled with the short side of the image, and every
random quantity is drawn as a fraction of its range (one uniform draw each), so the same
`(seed, index)` yields the same shapes at 64, 256 or 512 px, only scaled, and the hole ratio does not
depend on the training resolution.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and torch load when masks are drawn, not when a config is read (`asymvae --help`)
    import numpy as np
    import torch

# Mixed into the seed sequence so that masks are not correlated with other per-sample randomness
# (crops, flips) that may be seeded with the same `[seed, index]`.
_MASK_STREAM = 0x6D61736B  # "mask"

_RANGE_FIELDS = ("stroke_count", "stroke_vertices", "stroke_width", "stroke_length", "box_count", "box_size")


@dataclass
class MaskConfig:
    """Mix of inpainting masks: all-ones, irregular strokes and rectangles (LaMa's generators, scaled)."""

    full_mask_prob: float = 0.5
    """Share of samples whose mask is all ones, so the branch sees nothing of the image (official recipe:
    0.5)."""
    stroke_prob: float = 0.77
    """Among the masks that are not all ones: share of irregular strokes; the rest are rectangles
    (official recipe: about 77% / 23%)."""
    stroke_count: tuple[int, int] = (1, 5)
    """Inclusive range of strokes per stroke mask."""
    stroke_vertices: tuple[int, int] = (1, 5)
    """Inclusive range of straight segments per stroke."""
    stroke_width: tuple[int, int] = (5, 104)
    """Inclusive range of a segment's width, in px at `reference_resolution`."""
    stroke_length: tuple[int, int] = (10, 209)
    """Inclusive range of a segment's length, in px at `reference_resolution`."""
    stroke_max_angle: float = 4.0
    """Largest turn of a segment's direction, in radians (LaMa's `max_angle`)."""
    box_count: tuple[int, int] = (1, 3)
    """Inclusive range of rectangles per box mask."""
    box_size: tuple[int, int] = (30, 150)
    """Inclusive range of a rectangle's side, in px at `reference_resolution` (clamped to fit the image)."""
    box_margin: int = 10
    """Border, in px at `reference_resolution`, that rectangles never cover."""
    reference_resolution: int = 256
    """Short side, in px, at which the sizes above are given; they scale linearly with the image."""

    def __post_init__(self) -> None:
        for name in ("full_mask_prob", "stroke_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"masks.{name} must be a probability in [0, 1], got {value!r}")
        for name in _RANGE_FIELDS:
            setattr(self, name, _check_range(name, getattr(self, name)))
        angle = self.stroke_max_angle
        if not isinstance(angle, (int, float)) or not math.isfinite(angle) or angle < 0:
            raise ValueError(f"masks.stroke_max_angle must be a finite angle >= 0 (radians), got {angle!r}")
        if not _is_int(self.box_margin) or self.box_margin < 0:
            raise ValueError(f"masks.box_margin must be an integer >= 0, got {self.box_margin!r}")
        if not _is_int(self.reference_resolution) or self.reference_resolution <= 0:
            raise ValueError(
                f"masks.reference_resolution must be a positive integer, got {self.reference_resolution!r}"
            )


def eval_mask_config() -> MaskConfig:
    """The training mask mix without its all-ones share: every evaluation mask has a hole and a kept part
    (the full-mask case is scored separately)."""
    return MaskConfig(full_mask_prob=0.0)


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `True` as a size is always a config mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy's integers too


def _check_range(name: str, value: object) -> tuple[int, int]:
    # YAML gives lists, so accept any pair and store a tuple.
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise ValueError(f"masks.{name} must be a pair of integers (lo, hi), got {value!r}")
    lo, hi = int(value[0]), int(value[1])
    if lo < 1:
        raise ValueError(f"masks.{name} must have lo >= 1, got {value!r}")
    if lo > hi:
        raise ValueError(f"masks.{name} must have lo <= hi, got {value!r}")
    return lo, hi


def _pick(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] from exactly one uniform draw.

    `rng.integers` uses rejection sampling whose draw count depends on the range; a fixed draw count
    keeps the stream aligned across resolutions, so masks at different sizes are scaled copies.
    """
    return lo + min(int(rng.random() * (hi - lo + 1)), hi - lo)


def _scaled(value: float, scale: float) -> int:
    """A reference-resolution length in whole pixels, never below 1 px."""
    return max(1, math.floor(value * scale + 0.5))


def _draw_capsule(hole: np.ndarray, x0: float, y0: float, x1: float, y1: float, radius: float) -> None:
    """Mark every pixel centre within `radius` of the segment: a thick line with round ends and joints."""
    import numpy as np

    height, width = hole.shape
    left = max(0, math.floor(min(x0, x1) - radius))
    right = min(width, math.ceil(max(x0, x1) + radius) + 1)
    top = max(0, math.floor(min(y0, y1) - radius))
    bottom = min(height, math.ceil(max(y0, y1) + radius) + 1)
    if left >= right or top >= bottom:
        return
    ys = np.arange(top, bottom, dtype=np.float64)[:, None] - y0
    xs = np.arange(left, right, dtype=np.float64)[None, :] - x0
    dx, dy = x1 - x0, y1 - y0
    length_sq = dx * dx + dy * dy
    if length_sq > 0:
        t = np.clip((xs * dx + ys * dy) / length_sq, 0.0, 1.0)
        dist_sq = (xs - t * dx) ** 2 + (ys - t * dy) ** 2
    else:
        dist_sq = xs**2 + ys**2
    hole[top:bottom, left:right] |= dist_sq <= radius * radius


def _stroke_mask(cfg: MaskConfig, rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    import numpy as np

    hole = np.zeros((height, width), dtype=bool)
    for _ in range(_pick(rng, *cfg.stroke_count)):
        # Start anywhere on the image; fractions of the side keep the layout resolution-independent.
        x = min(rng.random() * width, width - 1.0)
        y = min(rng.random() * height, height - 1.0)
        for segment in range(_pick(rng, *cfg.stroke_vertices)):
            angle = 0.01 + rng.random() * cfg.stroke_max_angle
            # Mirroring every other segment's direction (sin flips, cos stays) makes strokes zigzag
            # instead of curling one way. LaMa's code keys the mirror on the stroke index; keying it
            # on the segment gives the same hole-area statistics and more varied stroke shapes.
            if segment % 2 == 0:
                angle = 2 * math.pi - angle
            length = max(1.0, _pick(rng, *cfg.stroke_length) * scale)
            stroke_w = max(1.0, _pick(rng, *cfg.stroke_width) * scale)
            end_x = min(max(x + length * math.sin(angle), 0.0), width - 1.0)
            end_y = min(max(y + length * math.cos(angle), 0.0), height - 1.0)
            _draw_capsule(hole, x, y, end_x, end_y, stroke_w / 2)
            x, y = end_x, end_y
    return hole


def _box_mask(cfg: MaskConfig, rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    import numpy as np

    hole = np.zeros((height, width), dtype=bool)
    margin = _scaled(cfg.box_margin, scale) if cfg.box_margin > 0 else 0
    size_lo, size_hi = (_scaled(v, scale) for v in cfg.box_size)
    spans = []
    for side in (width, height):
        # On tiny images shrink the margin so that at least one pixel per axis stays drawable.
        side_margin = min(margin, (side - 1) // 2)
        hi = max(1, min(size_hi, side - 2 * side_margin))
        spans.append((side_margin, min(size_lo, hi), hi, side))
    (mx, wlo, whi, _), (my, hlo, hhi, _) = spans
    for _ in range(_pick(rng, *cfg.box_count)):
        box_w = _pick(rng, wlo, whi)
        box_h = _pick(rng, hlo, hhi)
        left = _pick(rng, mx, max(mx, width - mx - box_w))
        top = _pick(rng, my, max(my, height - my - box_h))
        hole[top : top + box_h, left : left + box_w] = True
    return hole


def make_mask(cfg: MaskConfig, height: int, width: int, seed: int, index: int) -> np.ndarray:
    """Build the inpainting mask of one sample (1 = hole to generate, 0 = pixel to keep).

    Args:
        cfg: the mix and geometry of the masks.
        height, width: mask size in pixels (any aspect ratio).
        seed: the run's seed (integer >= 0).
        index: the sample's index (integer >= 0); fold in anything else that should vary the mask,
            such as the epoch, before calling.

    Returns:
        A float32 array of shape (height, width) holding only 0.0 and 1.0. The same arguments give the
        identical mask in any process; a different `index` or `seed` almost always gives another one.
    """
    import numpy as np

    for name, value in (("height", height), ("width", width)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"mask {name} must be a positive integer, got {value!r}")
    for name, value in (("seed", seed), ("index", index)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"mask {name} must be an integer >= 0, got {value!r}")
    rng = np.random.default_rng([int(seed), int(index), _MASK_STREAM])
    # Always draw both choices so that the stream after them does not depend on the probabilities.
    full_draw, stroke_draw = rng.random(), rng.random()
    if full_draw < cfg.full_mask_prob:
        return np.ones((height, width), dtype=np.float32)
    scale = min(height, width) / cfg.reference_resolution
    if stroke_draw < cfg.stroke_prob:
        hole = _stroke_mask(cfg, rng, height, width, scale)
    else:
        hole = _box_mask(cfg, rng, height, width, scale)
    return hole.astype(np.float32)


def mask_tensor(cfg: MaskConfig, height: int, width: int, seed: int, index: int) -> torch.Tensor:
    """`make_mask` as a float32 tensor of shape (1, height, width), ready to stack into a batch."""
    import torch

    return torch.from_numpy(make_mask(cfg, height, width, seed, index)).unsqueeze(0)
