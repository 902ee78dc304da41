"""Configuration of where training images come from and how they are cropped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Training data: the source, its validation rules and the per-sample transforms."""

    source: str = "builtin:demo"
    """Hugging Face dataset id, a local folder (plain images, `save_to_disk`, imagefolder or parquet),
    or `builtin:demo` (photos shipped with scikit-image; needs no network)."""
    split: str = "train"
    """Split to read: of a Hugging Face dataset, or the subfolder of that name in an image folder that is
    split into train/, val/, test/ ... subfolders (a folder without them is read whole)."""
    image_column: str | None = None
    """Column holding the images; found automatically (the first Image-typed column) when unset."""
    resolution: int = 256
    """Side of the square training crop, in pixels. Must be a multiple of 8 (the VAE's downsampling)."""
    crop: str = "random_scale"
    """`random_scale`: a random square of `crop_scale_min`..1 of the short side, resized (official recipe);
    `random`: resize the short side to `resolution`, then a random square; `center`: the same, centred."""
    crop_scale_min: float = 0.5
    """Smallest crop side, as a fraction of the image's short side, for `crop=random_scale`."""
    hflip: bool = True
    """Flip half of the samples horizontally."""
    min_side: int | None = None
    """Images whose short side is below this are skipped as too small (default: resolution // 2)."""
    max_bad_share: float = 0.05
    """Fail when more than this share of the source's images are unreadable or too small."""
    max_samples: int | None = None
    """Use only the first N images of the source (quick experiments)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = load in the training process)."""
    shards: str | None = None
    """A dataset made by `asymvae prepare`: its manifest (`s3://bucket/prefix/manifest.json`, a local path) or
    the folder/prefix holding it. When set, the train split is streamed from its shards and `source`, `split`,
    `image_column`, `max_samples` and the bad-image settings are not used (prepare applied them)."""
    shuffle_buffer: int = 1000
    """With `shards`: samples are shuffled within consecutive blocks of this many (per reader)."""

    def __post_init__(self) -> None:
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"data.resolution must be a positive multiple of 8, got {self.resolution}")
        if self.crop not in ("random_scale", "random", "center"):
            raise ValueError(f"data.crop must be random_scale, random or center, got {self.crop!r}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"data.crop_scale_min must be in (0, 1], got {self.crop_scale_min}")
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ValueError(f"data.max_bad_share must be in [0, 1], got {self.max_bad_share}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")

    @property
    def effective_min_side(self) -> int:
        """The short-side threshold below which an image is skipped."""
        return self.min_side if self.min_side is not None else self.resolution // 2
