"""What one inpainting call asks for, read and checked from files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from asymvae.data.images import BadImageError, decode_image, decode_mask_image
from asymvae.errors import UserError

if TYPE_CHECKING:  # an annotation only: reading a request's files needs neither torch nor diffusers
    from asymvae.model.decode import TileConfig

__all__ = ["InpaintInputError", "InpaintRequest", "open_input", "read_request"]


class InpaintInputError(UserError, ValueError):
    """An inpainting input (image, mask, pipeline folder) that cannot be used; the message says which and why."""


@dataclass
class InpaintRequest:
    """One call of an inpainting pipeline."""

    prompts: list[str]
    """One or more prompts; the images come back prompt-major."""
    image: Image.Image
    """The image to edit (RGB)."""
    mask: Image.Image
    """White (255) = hole to generate, black = keep (diffusers' convention)."""
    num_images_per_prompt: int = 1
    """Images generated per prompt."""
    steps: int = 30
    """Denoising steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance; None: the pipeline's own default (SD/SDXL 7.5, SD3 and FLUX inpaint 7.0, FLUX
    fill 30)."""
    strength: float | None = None
    """How far the image is re-noised before denoising (1.0 = fully); None: the pipeline's own default."""
    seed: int = 0
    """Seed of the generator handed to the pipeline."""
    height: int | None = None
    """Output height; None: the image's, rounded down to the pipeline's size multiple (8, or 16 for SD3 and FLUX)."""
    width: int | None = None
    """Output width; None: the image's, rounded down like `height`."""
    tile: TileConfig | None = None
    """Decode in overlapping tiles, each conditioned on its crop of image and mask (large images); None: whole."""


def open_input(path: str | Path, decode: Callable[[Path], Image.Image], what: str) -> Image.Image:
    """The file given as `--{what}`, decoded as `prepare` decodes images (`asymvae.data.images`: EXIF
    orientation applied, alpha over white for an image); InpaintInputError naming the flag and file when it is
    missing or not a readable image."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InpaintInputError(f"--{what} {p}: no such file")
    try:
        return decode(p)
    except BadImageError as e:
        raise InpaintInputError(f"--{what} {p}: not a readable image ({e.reason})") from e


def read_request(
    image: str | Path, mask: str | Path, prompts: list[str], **options: int | float | TileConfig | None
) -> InpaintRequest:
    """An `InpaintRequest` from image files; `options` are its other fields (None: the field's default)."""
    img = open_input(image, decode_image, "image")
    msk = open_input(mask, decode_mask_image, "mask")
    if img.size != msk.size:
        raise InpaintInputError(f"--image is {img.size[0]}x{img.size[1]} but --mask is {msk.size[0]}x{msk.size[1]}")
    if not prompts:
        raise InpaintInputError("give at least one --prompt")
    kwargs = {k: v for k, v in options.items() if v is not None}
    return InpaintRequest(prompts=list(prompts), image=img, mask=msk, **kwargs)
