"""Configuration of where training images come from and how they are cropped (`DataConfig`), and of how
`asymvae prepare` turns a source into shards (`PrepareConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from asymvae.masks import MaskConfig, eval_mask_config


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
    crop: Literal["random_scale", "random", "center"] = "random_scale"
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


@dataclass
class PrepareConfig:
    """How `asymvae prepare` turns a source into shards (`asymvae prepare --prepare.FIELD VALUE`)."""

    split: str = "train"
    """Split of the source to read (of a Hugging Face dataset, or split subfolder of an image folder)."""
    image_column: str | None = None
    """Image column of a dataset source (found automatically when unset)."""
    max_samples: int | None = None
    """Use only the first N images of the source."""
    max_side: int = 1024
    """Longest side after resizing (images are only ever shrunk, keeping their aspect ratio)."""
    min_side: int = 64
    """Images whose short side is below this are skipped as too small, before or after shrinking to
    `max_side` (so an extreme aspect ratio, such as 10000x70 at max_side 1024, is skipped as too narrow)."""
    val_fraction: float = 0.05
    """Share of images put in the validation split, chosen by a hash of each image's name (stable when the
    source grows)."""
    image_format: Literal["jpeg", "png"] = "jpeg"
    """`jpeg` (4:4:4 chroma, `jpeg_quality`) or `png` (lossless)."""
    jpeg_quality: int = 95
    """JPEG quality, 1-100."""
    shard_max_bytes: int = 128 << 20
    """Largest shard size in bytes (a single sample larger than this gets a shard of its own)."""
    max_bad_share: float = 0.05
    """Fail, writing no manifest, when more than this share of the images is unusable."""
    workers: int = 0
    """Processes that decode and encode images (0 = one per CPU core). Does not change the output."""
    mask_seed: int = 0
    """Seed of the fixed evaluation masks stored with validation samples."""
    eval_masks: MaskConfig = field(default_factory=eval_mask_config)
    """Mix and geometry of the evaluation masks (1 = hole)."""

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise ValueError(f"prepare.max_side must be >= 8, got {self.max_side}")
        if self.min_side < 1 or self.min_side > self.max_side:
            raise ValueError(f"prepare.min_side must be in [1, max_side], got {self.min_side}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"prepare.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"prepare.image_format must be jpeg or png, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"prepare.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.shard_max_bytes < 64 << 10:
            raise ValueError(f"prepare.shard_max_bytes must be at least 65536, got {self.shard_max_bytes}")
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ValueError(f"prepare.max_bad_share must be in [0, 1], got {self.max_bad_share}")
        if self.workers < 0:
            raise ValueError(f"prepare.workers must be >= 0, got {self.workers}")

    def output_settings(self) -> dict[str, Any]:
        """The fields that determine the output (all but `workers`)."""
        settings = asdict(self)
        settings.pop("workers")
        return settings
