"""Decoding of one training image, from any source, into a validated RGB `PIL.Image`.

Everything that can be wrong with a single image (empty, not an image, truncated, too small, absurdly
large) surfaces here as a `BadImageError` with a short human-readable reason, so that the source scan can
report bad files by name instead of crashing a training run hours later. Nothing here knows about torch.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["BadImageError", "check_image", "decode_image"]

ImageInput = bytes | bytearray | memoryview | str | os.PathLike | Image.Image

# EPS is the one format Pillow decodes by running an external interpreter (Ghostscript) on the file;
# untrusted training data should never reach it, so such files are reported as "not an image".
_EXCLUDED_FORMATS = frozenset({"EPS"})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION = 0x0112


class BadImageError(ValueError):
    """An image that cannot be used for training; `reason` says why in a few words.

    `kind` is a stable category for summaries: empty, unreadable, not_image, corrupt, too_small, too_large,
    unsupported.
    """

    def __init__(self, reason: str, kind: str = "corrupt") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def as_bad_image(error: Exception) -> BadImageError:
    """An error raised while loading one image, as a BadImageError: itself, or kind `unreadable` for any
    other error (a source failing on one row must not abort a whole run)."""
    if isinstance(error, BadImageError):
        return error
    return BadImageError(f"cannot load ({type(error).__name__}: {error})", "unreadable")


def _allowed_formats() -> list[str]:
    # Computed per call (cheap) so that plugins registered later, e.g. pillow-heif, are honoured.
    Image.init()
    return [f for f in Image.OPEN if f not in _EXCLUDED_FORMATS]


def _open(data: ImageInput) -> Image.Image:
    """A lazily opened image (header parsed, pixels not yet decoded)."""
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            # Read into memory: no file handle stays open in long-lived dataloader workers.
            data = path.read_bytes()
        except OSError as e:
            raise BadImageError(f"cannot read file: {e.strerror or e}", "unreadable") from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, a path or a PIL image, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImageError("empty file (0 bytes)", "empty")
    try:
        return Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError as e:
        raise _too_large(e) from e
    except UnidentifiedImageError as e:
        raise BadImageError("not an image (cannot identify image file)", "not_image") from e
    except Exception as e:  # Pillow raises many types (SyntaxError, struct.error, ...) on broken headers
        raise BadImageError(f"corrupt header ({type(e).__name__}: {e})", "corrupt") from e


def _too_large(detail: object) -> BadImageError:
    return BadImageError(
        f"too large: {detail} (decompression-bomb guard, PIL.Image.MAX_IMAGE_PIXELS="
        f"{Image.MAX_IMAGE_PIXELS}; raise it in code if such images are intended)",
        "too_large",
    )


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size of a `width`x`height` image shrunk (never enlarged) so that its longest side is at most `max_side`,
    keeping its aspect ratio."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_size(img: Image.Image, min_side: int, max_side: int | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImageError(f"corrupt: invalid size {w}x{h}", "corrupt")
    # Image.open only raises at twice the limit (and merely warns above it); any image over the limit
    # is far beyond what VAE training can use, so reject it uniformly with a clear reason.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise _too_large(f"{w}x{h} = {w * h} pixels")
    if min(w, h) < min_side:
        raise BadImageError(f"too small: {w}x{h}, short side < {min_side}", "too_small")
    if max_side is not None and min(shrunk := shrunk_size(w, h, max_side)) < min_side:
        raise BadImageError(
            f"too narrow: {w}x{h} becomes {shrunk[0]}x{shrunk[1]} with its long side shrunk to {max_side}, "
            f"short side < {min_side}",
            "too_small",
        )


def _load(img: Image.Image) -> None:
    """Decodes all pixels, so that truncated or corrupt data fails here rather than in a worker later."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone enabled Pillow's global "pad truncated images with grey"; that would hide broken files.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; bad images could not be detected")
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise _too_large(e) from e
    except MemoryError as e:
        raise BadImageError("too large to decode (out of memory)", "too_large") from e
    except Exception as e:  # OSError("image file is truncated"), SyntaxError, ValueError, zlib errors, ...
        raise BadImageError(f"truncated or corrupt ({type(e).__name__}: {e})", "corrupt") from e


def check_image(data: ImageInput, min_side: int = 0, max_side: int | None = None) -> tuple[int, int]:
    """Validates an image like `decode_image` but faster; returns its (width, height) before EXIF rotation.

    JPEGs are decoded at a reduced DCT scale (Pillow's draft mode): every byte is still entropy-decoded, so
    truncation and corruption are still caught, at a fraction of the cost of a full decode.
    Raises `BadImageError`.
    """
    img = _open(data)
    _check_size(img, min_side, max_side)
    size = img.size
    if img.format in ("JPEG", "MPO") and not isinstance(data, Image.Image):
        img.draft(None, (max(min_side, 1), max(min_side, 1)))
    _load(img)
    return size


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to 8-bit RGB, scaled by bit depth rather than clipped."""
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Float images come either normalised to [0, 1] or on the 8-bit scale; anything else is clipped.
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
    else:
        arr = np.asarray(img.convert("I") if img.mode in _SIXTEEN_BIT_MODES else img, dtype=np.int64)
        arr = np.clip(arr, 0, None)
        if img.mode in _SIXTEEN_BIT_MODES:
            full_scale = 65535
        else:
            # Mode "I" is Pillow's 32-bit container; it usually holds 16-bit data (TIFF, other decoders),
            # so treat it as 16-bit unless values exceed that range.
            full_scale = 65535 if arr.size == 0 or arr.max() <= 65535 else 2**32 - 1
        arr = arr.astype(np.float64) * (255.0 / full_scale)  # 65535 -> 255, 32768 -> 128 (i.e. /257)
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited over white.

    White, not black: transparent regions (for example of pokemon-style RGBA sprites) are usually stored
    as black with alpha 0. Dropping alpha would turn the background black and teach the decoder dark halos
    around objects; over white they read as the plain background they are meant to be.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _high_depth_to_rgb(img)
    if mode == "La":
        img = img.convert("LA")  # Pillow cannot go from premultiplied La to RGBA directly
    has_alpha = (
        img.mode in _ALPHA_MODES
        or "transparency" in img.info  # palette/colour-key transparency (GIF, PNG tRNS)
        or (img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA")
    )
    try:
        if has_alpha:
            return _over_white(img.convert("RGBA"))
        # Covers 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX; Pillow converts LAB colorimetrically.
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImageError(f"unsupported image mode {mode!r} ({e})", "unsupported") from e


def decode_image(data: ImageInput, min_side: int = 0, max_side: int | None = None) -> Image.Image:
    """Decodes encoded bytes, a file path or a PIL image into a fully loaded RGB image.

    EXIF orientation is applied; every Pillow mode is converted to RGB (alpha over white, 16-bit scaled to
    8-bit). Raises `BadImageError` for empty data, non-images, truncated or corrupt data, images whose short
    side is below `min_side` (also once shrunk to a long side of `max_side`, when given: an extreme aspect
    ratio), and images over Pillow's decompression-bomb pixel limit.
    """
    img = _open(data)
    _check_size(img, min_side, max_side)
    _load(img)
    return _to_rgb(_oriented(img))


def decode_mask_image(data: ImageInput) -> Image.Image:
    """Decodes a mask like `decode_image` (checked, EXIF orientation applied, so it lines up with its
    image), but into 8-bit greyscale (`L`): a mask's values are its grey levels, and any alpha is ignored."""
    img = _open(data)
    _check_size(img, 0, None)
    _load(img)
    try:
        return _oriented(img).convert("L")
    except (ValueError, OSError) as e:
        raise BadImageError(f"unsupported mask mode {img.mode!r} ({e})", "unsupported") from e


def _oriented(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (unchanged without one)."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not cost us an otherwise good image
        orientation = 1
    if orientation != 1:
        # A broken orientation tag should not cost an otherwise good image: keep the stored orientation.
        with contextlib.suppress(Exception):
            img = ImageOps.exif_transpose(img)
    return img
