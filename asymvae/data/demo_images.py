"""The built-in demo set: deterministic square crops of colour photos that ship with scikit-image.

It needs no network and no download: every photo used here is in scikit-image's wheel (`skimage/data/`),
unlike the datasets `skimage.data` fetches on demand with pooch. Photos and their terms, as stated in the
`skimage.data` docstrings:

* `astronaut` (Eileen Collins, NASA Great Images): no known copyright restrictions, public domain.
* `chelsea` (the cat, by Stefan van der Walt): CC0.
* `coffee` (Pikolo Espresso Bar, by Rachel Michetti): CC0.
* `rocket` (DSCOVR launch on Falcon 9, SpaceX): released into the public domain by SpaceX.
* `hubble_deep_field` (NASA/HubbleSite): may be freely used, public domain.
* `retina` (fundus photograph, Mikael Häggström, Wikimedia Commons): CC0 1.0.
* `immunohistochemistry` (Center for Microscopy And Molecular Imaging): no known copyright restrictions.
* `motorcycle_left` / `motorcycle_right` (`stereo_motorcycle`, Middlebury 2014 stereo benchmark,
  Scharstein et al., GCPR 2014): the docstring states no licence; Middlebury asks users of its datasets
  to cite the paper. They are redistributed in scikit-image's BSD-licensed wheel and are only read
  locally here, never redistributed by this package.

The set is meant for smoke tests and the offline demo run, not for training a useful decoder.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from asymvae.data.image_source import ImageSource
from asymvae.extras import require

__all__ = ["PHOTO_NAMES", "DemoSource", "demo_image", "demo_images"]

PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
)
_MIN_SCALE, _MAX_SCALE = 0.3, 1.0
_SKIMAGE_DATA = ("skimage.data", "demo", "the built-in demo images")
"""The photos' module and the extra that installs it (`require` arguments)."""


# Cached per process: dataloader workers call this for every sample, and decoding e.g. the 1411x1411
# retina photo each time would dominate the loading cost.
@functools.cache
def load_photo(name: str) -> Image.Image:
    """One of the `PHOTO_NAMES` as an RGB image (read from scikit-image's bundled files, no download)."""
    if name not in PHOTO_NAMES:
        raise ValueError(f"unknown demo photo {name!r}; available: {PHOTO_NAMES}")
    skimage_data = require(*_SKIMAGE_DATA)
    if name.startswith("motorcycle_"):
        left, right, _disparity = skimage_data.stereo_motorcycle()
        array = left if name == "motorcycle_left" else right
    else:
        array = getattr(skimage_data, name)()
    image = Image.fromarray(np.ascontiguousarray(array[..., :3], dtype=np.uint8), "RGB")
    image.load()
    return image


def demo_image(index: int, size: int = 96, seed: int = 0) -> tuple[Image.Image, str]:
    """Demo image `index` (a crop of photo `index % len(PHOTO_NAMES)`) and the photo's name.

    The crop depends only on (seed, index): a random square of 0.3..1 of the photo's short side, at a
    random position, resized to `size`, flipped horizontally half of the time.
    """
    if index < 0 or size <= 0:
        raise ValueError(f"need index >= 0 and size > 0, got index={index}, size={size}")
    name = PHOTO_NAMES[index % len(PHOTO_NAMES)]
    photo = load_photo(name)
    rng = np.random.default_rng([seed, index])
    w, h = photo.size
    side = max(1, round(min(w, h) * rng.uniform(_MIN_SCALE, _MAX_SCALE)))
    x0 = int(rng.integers(0, w - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    crop = photo.resize((size, size), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop, name


def demo_images(count: int = 96, size: int = 96, seed: int = 0) -> list[Image.Image]:
    """`count` deterministic RGB `size`x`size` crops, cycling over the bundled photos."""
    return [demo_image(i, size, seed)[0] for i in range(count)]


class DemoSource(ImageSource):
    """The demo set as an `ImageSource`; crops are made on demand, so it pickles small for workers."""

    def __init__(self, count: int = 96, size: int = 256, seed: int = 0) -> None:
        require(*_SKIMAGE_DATA)  # when the source is chosen, not once per image
        self.count = count
        self.size = size
        self.seed = seed
        self.description = f"builtin:demo ({count} crops of {size}x{size} from scikit-image photos)"

    def __len__(self) -> int:
        return self.count

    def load(self, i: int) -> Image.Image:
        """Crop `i`, an RGB PIL image."""
        return demo_image(self._check_index(i), self.size, self.seed)[0]

    def name(self, i: int) -> str:
        """Like `builtin:demo[17] (chelsea)`."""
        i = self._check_index(i)
        return f"builtin:demo[{i}] ({PHOTO_NAMES[i % len(PHOTO_NAMES)]})"

    def head(self, n: int) -> DemoSource:
        """The first `n` crops (the same crops: each depends only on the seed and its index)."""
        return DemoSource(count=n, size=self.size, seed=self.seed)
