"""The PNGs `asymvae inpaint` (and `asymvae infer --output`) write: marked as asymvae's, written atomically, and
never over a file the command did not write.

Each PNG carries the text chunk `Software: asymvae inpaint` (`MARK`; `asymvae infer`'s carry `Software: asymvae
infer`); an existing output file without the command's mark is someone else's file, and the command refuses
before loading any model or sending any request rather than overwrite it.
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


def _written_by(path: Path, mark: tuple[str, str]) -> bool:
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(mark[0]) == mark[1]
    except (OSError, ValueError, SyntaxError):  # not an image Pillow reads: not one of ours either
        return False


def check_outputs(paths: list[Path], mark: tuple[str, str] = MARK, option: str = "--out") -> None:
    """Raise InpaintInputError naming the first of `paths` that exists and does not carry `mark` (was not
    written by the command that writes it); `option` is the command's flag that chooses the path."""
    for path in paths:
        if path.exists() and not _written_by(path, mark):
            raise InpaintInputError(
                f"{path} exists and was not written by {mark[1]} (it lacks the PNG text {mark[0]}: {mark[1]}), "
                f"so it is not overwritten. Fix: move it away, or choose another {option}."
            )


def save_outputs(images: list[Image.Image], paths: list[Path], mark: tuple[str, str] = MARK) -> None:
    """Save each image as a PNG carrying `mark`, atomically (a reader never sees half a file)."""
    for image, path in zip(images, paths, strict=True):
        info = PngInfo()
        info.add_text(*mark)
        data = io.BytesIO()
        image.save(data, format="PNG", pnginfo=info)
        write_atomic(path, data.getvalue())
