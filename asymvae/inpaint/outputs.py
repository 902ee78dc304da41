"""The PNGs `asymvae inpaint` writes: marked as asymvae's, written atomically, and never over a file it did
not write.

Each PNG carries the text chunk `Software: asymvae inpaint`; an existing `prompt<i>_<j>.png` without it is
someone else's file, and the run refuses before loading any model rather than overwrite it.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from asymvae.inpaint.request import InpaintInputError
from asymvae.storage.local import write_atomic

MARK = ("Software", "asymvae inpaint")


def output_paths(out: Path, prompts: int, per_prompt: int) -> list[Path]:
    """`out/prompt<i>_<j>.png` for every prompt i and image j, in the order the pipeline returns them."""
    return [Path(out) / f"prompt{i}_{j}.png" for i in range(prompts) for j in range(per_prompt)]


def _written_by_asymvae(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(MARK[0]) == MARK[1]
    except (OSError, ValueError, SyntaxError):  # not an image Pillow reads: not one of ours either
        return False


def check_outputs(paths: list[Path]) -> None:
    """Raise InpaintInputError naming the first of `paths` that exists and was not written by asymvae."""
    for path in paths:
        if path.exists() and not _written_by_asymvae(path):
            raise InpaintInputError(
                f"{path} exists and was not written by asymvae inpaint (it lacks the PNG text "
                f"{MARK[0]}: {MARK[1]}), so it is not overwritten. Fix: move it away, or choose another --out."
            )


def save_outputs(images: list[Image.Image], paths: list[Path]) -> None:
    """Save each image as a marked PNG, atomically (a reader never sees half a file)."""
    for image, path in zip(images, paths, strict=True):
        info = PngInfo()
        info.add_text(*MARK)
        data = io.BytesIO()
        image.save(data, format="PNG", pnginfo=info)
        write_atomic(path, data.getvalue())
