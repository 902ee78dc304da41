"""What one evaluation scores and how: `EvalConfig` (also the options of `asymvae eval`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch and diffusers load when an evaluation runs, not when its options are parsed
    from asymvae.model.decode import TileConfig

EVAL_MASK_SEED = 20_230_607
"""Seed of the evaluation masks (index = the image's position in the source): every evaluation of every
model on the same source sees the same masks. Different from any training seed."""


@dataclass
class EvalConfig:
    """One evaluation: which models, which images, where the report goes."""

    model: str
    """The asymmetric model: a training export (`OUTPUT/step<N>`, holding `vae/`) or a diffusers VAE folder."""
    baseline: str
    """The baseline VAE (a plain AutoencoderKL, or any VAE whose encoder produced the model's training latents)."""
    data: str
    """Held-out images: a dataset made by `asymvae prepare` (its manifest, folder or `s3://` prefix: the val
    split with its stored masks), or any training data source (folder, dataset, `builtin:demo?seed=1`)."""
    out: str | None = None
    """Report folder (default: `<model>/eval`)."""
    split: str = "validation"
    """Split of a dataset / split subfolder to read (`validation` = a prepared dataset's `val`); sources
    without splits ignore it."""
    resolution: int = 256
    """Side of the centre crop scored, in px (a multiple of 8)."""
    max_images: int | None = None
    """Score only the first N images."""
    batch_size: int = 8
    """Images decoded at once."""
    lpips: Literal["shift_tolerant", "standard", "off"] = "shift_tolerant"
    """`shift_tolerant` (ST-LPIPS, weights ship with the package), `standard` (needs torchvision's weights) or
    `off`."""
    lpips_net: Literal["alex", "vgg"] = "alex"
    """LPIPS backbone: `alex` or `vgg`."""
    grid_samples: int = 4
    """Rows of the PNG grid."""
    mask_seed: int = EVAL_MASK_SEED
    """Seed of the fixed evaluation masks of a data source (a prepared dataset brings its masks)."""
    tile: int | None = None
    """Decode in overlapping tiles of this many px (large images; both decoders alike); None: whole images."""
    tile_overlap: int = 128
    """Pixels neighbouring tiles share (with `tile`)."""
    device: str | None = None
    """`cuda`, `cpu`, ... (default: cuda when available)."""
    progress: bool = True
    """A progress bar on a terminal."""

    def __post_init__(self) -> None:
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {self.resolution}")
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.max_images is not None and self.max_images <= 0:
            raise ValueError(f"--max-images must be positive, got {self.max_images}")
        if self.lpips not in ("shift_tolerant", "standard", "off"):
            raise ValueError(f"--lpips must be shift_tolerant, standard or off, got {self.lpips!r}")
        if self.lpips_net not in ("alex", "vgg"):
            raise ValueError(f"--lpips-net must be alex or vgg, got {self.lpips_net!r}")
        self.tiling  # noqa: B018 - a bad tile size fails here, before any model loads

    @property
    def tiling(self) -> TileConfig | None:
        """The tiled-decoding settings, or None for whole images."""
        from asymvae.model.decode import tile_option

        return tile_option(self.tile, self.tile_overlap)

    @property
    def out_dir(self) -> Path:
        """Where the report is written."""
        return Path(self.out) if self.out else Path(self.model) / "eval"
