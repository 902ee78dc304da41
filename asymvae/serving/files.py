"""A decode request read from files, and the decoded image written as a PNG (`asymvae infer --image --mask
--latent --output`).

* image: any file Pillow reads (as `asymvae inpaint` reads it: EXIF orientation applied, alpha over white),
  to RGB on [-1, 1], (1, 3, H, W).
* mask: a file of the image's size, read as 8-bit grey: >= 128 (light) = hole, the pixels the diffusion model
  generated; below = kept (the convention of diffusers' inpainting pipelines and of the masks `prepare`
  stores), (1, 1, H, W) of 0/1.
* latent: what the diffusion model hands the decoder, scaled as the served model takes it (`asymvae.export.onnx`):
  a `.npy` file (read without pickle) or a `.safetensors` file with one tensor (or one named `latent`), of shape
  (1, C, H/8, W/8) or (C, H/8, W/8). From a diffusers pipeline: `pipe(..., output_type="latent").images`.
* output: the decoded `sample` clamped to [-1, 1] and mapped to 0..255 as diffusers' `VaeImageProcessor`
  does, not composited with the image; a PNG carrying `Software: asymvae infer`, written atomically, never over
  a file without that mark (`asymvae.inpaint.outputs`, as `asymvae inpaint` writes its PNGs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from asymvae.data.images import decode_image, decode_mask_image
from asymvae.errors import UserError
from asymvae.inpaint.outputs import check_outputs, save_outputs
from asymvae.inpaint.request import open_input
from asymvae.serving.client import DOWNSAMPLING, ModelIO, decoder_inputs

MARK = ("Software", "asymvae infer")
HOLE_LEVEL = 128
"""Mask grey levels from this up are the hole."""
_SAVE_HINT = 'save it with np.save(PATH, pipe(..., output_type="latent").images.float().cpu().numpy())'


class InferInputError(UserError, ValueError):
    """An input file of `asymvae infer` that cannot be used; the message names the file and the fix."""


def read_latent(path: str | Path) -> np.ndarray:
    """The latent in `path` (.npy or .safetensors) as float32 (1, C, h, w); InferInputError when the file is
    missing, unreadable, not one float tensor of that shape, or holds a NaN or infinity."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InferInputError(f"--latent {p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InferInputError(f"--latent {p}: not a NumPy .npy array ({e}); {_SAVE_HINT}") from None
    elif suffix == ".safetensors":
        array = _one_safetensor(p)
    else:
        raise InferInputError(f"--latent {p}: expected a .npy or .safetensors file; {_SAVE_HINT}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InferInputError(f"--latent {p}: holds {array.dtype} values, not a latent's floats; {_SAVE_HINT}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1:
        raise InferInputError(
            f"--latent {p}: shape {list(array.shape)}, expected one latent, (1, C, H/8, W/8) or (C, H/8, W/8); "
            "save one image's latent (latents[i:i+1]) per file"
        )
    bad = int(array.size - np.isfinite(array).sum())
    if bad:
        raise InferInputError(
            f"--latent {p}: {bad} of {array.size} values are NaN or infinite, nothing a decoder can decode; "
            "save the latent the pipeline returned before anything overflowed (float32, not float16)"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _one_safetensor(p: Path) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(p)
    except (SafetensorError, ValueError, TypeError, OSError) as e:
        raise InferInputError(
            f"--latent {p}: not a safetensors file NumPy reads ({e}); save the latent as float32"
        ) from None
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    if "latent" in tensors:
        return tensors["latent"]
    raise InferInputError(f"--latent {p}: holds tensors {sorted(tensors)}; save one tensor, or one named 'latent'")


@dataclass
class DecodeFiles:
    """The three inputs of one decode, read and checked against one another."""

    latent: np.ndarray
    """(1, C, h, w) float32."""
    image: np.ndarray
    """(1, 3, 8h, 8w) float32 on [-1, 1]."""
    mask: np.ndarray
    """(1, 1, 8h, 8w) float32, 1 = hole."""
    latent_path: Path

    def inputs(self, io: ModelIO) -> dict[str, np.ndarray]:
        """The request for the served model `io`; InferInputError when the latent's channels are not its."""
        channels = io.input("latent").shape[1]
        if channels > 0 and self.latent.shape[1] != channels:
            raise InferInputError(
                f"--latent {self.latent_path}: {self.latent.shape[1]} channels, but model {io.model!r} decodes "
                f"latents of {channels}; pass the latent of the diffusion model this decoder was trained for"
            )
        _, _, height, width = self.image.shape
        return decoder_inputs(io, height, width, latent=self.latent, image=self.image, mask=self.mask)


def read_files(image: str | Path, mask: str | Path, latent: str | Path) -> DecodeFiles:
    """Read and check `--image`, `--mask` and `--latent`: readable, the mask of the image's size, the latent of
    the image's size divided by 8."""
    img = open_input(image, decode_image, "image")
    msk = open_input(mask, decode_mask_image, "mask")
    if img.size != msk.size:
        raise InferInputError(
            f"--image {image} is {img.size[0]}x{img.size[1]} px but --mask {mask} is {msk.size[0]}x{msk.size[1]} px; "
            "pass the mask made for this image"
        )
    z = read_latent(latent)
    width, height = img.size
    h, w = z.shape[2:]
    if (height, width) != (h * DOWNSAMPLING, w * DOWNSAMPLING):
        raise InferInputError(
            f"--latent {latent} is {w}x{h}, the latent of a {w * DOWNSAMPLING}x{h * DOWNSAMPLING} px image, but "
            f"--image {image} is {width}x{height} px; pass the image at the size the pipeline generated (its "
            "height and width), or the latent made for this image"
        )
    pixels = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    hole = (np.asarray(msk) >= HOLE_LEVEL).astype(np.float32)[None, None]
    return DecodeFiles(z, pixels, hole, Path(latent))


def check_output(path: str | Path) -> Path:
    """`--output` as a Path, checked before anything is sent: a .png name, and no file there that `asymvae
    infer` did not write."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".png":
        raise InferInputError(f"--output {p}: the decoded image is written as PNG; give a name ending in .png")
    check_outputs([p], MARK, "--output")
    return p


def to_pixels(sample: np.ndarray) -> np.ndarray:
    """One decoded image (3, H, W) on about [-1, 1] as uint8 (H, W, 3): clamped, then x / 2 + 0.5 scaled to
    0..255 and rounded, as diffusers' `VaeImageProcessor.postprocess` turns a decode into a PIL image."""
    unit = np.clip(sample.astype(np.float32) / 2 + 0.5, 0.0, 1.0)
    return (unit.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def save_png(sample: np.ndarray, path: Path) -> None:
    """Write one decoded image (3, H, W) to `path` as a marked PNG, atomically."""
    save_outputs([Image.fromarray(to_pixels(sample))], [path], MARK)
