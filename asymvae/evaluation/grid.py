"""The evaluation grid (grid.png): for each sample, one labelled row per decoding, with error maps scaled to the data.

Per sample three rows: the baseline's plain decoding, the asymmetric decoding with the mask, and the asymmetric
decoding with a full mask (the whole image to generate: the trade-off plain text-to-image decoding pays). Each row
shows what the decoder's mask branch sees, the decoding, its absolute error and a zoomed crop of a detailed,
preserved (unmasked) region beside the same crop of the input; its label gives the decoder and the sample's own
numbers (pre_error, PSNR per region, from `asymvae.evaluation.metrics`, as in metrics.json). The hole is outlined on
every tile of the masked rows, the zoomed region boxed.

The error maps of the whole grid share one scale: black 0 to pale yellow at the 99th percentile of every error
shown, stated in the header. A fixed scale fits only one kind of model: a real SD VAE's errors are a few hundredths
and would all be near black on a scale made for a toy model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from asymvae.evaluation import metrics as M

__all__ = [
    "COLUMNS",
    "ERROR_PERCENTILE",
    "ROWS",
    "GridSample",
    "cell",
    "error_scale",
    "grid_image",
    "row_labels",
    "zoom_window",
]

ERROR_PERCENTILE = 99.0
"""The error drawn at full heat: this percentile of all error values the grid shows; larger errors saturate."""
_TILE_MIN = 128
_LABEL_W = 176
_HEADER = 52
_GAP = 6
_LINE = 13
_OUTLINE = (0, 229, 255)  # the hole's edge: cyan, not on the heat scale
_BOX = (60, 255, 60)  # the zoomed region
_TITLES = ("decoder: this sample's numbers", "branch sees", "decoding", "|error|", "zoom: input | decoding")
# Black -> purple -> orange -> pale yellow, a perceptually ordered heat scale.
_HEAT = np.array([[0, 0, 4], [80, 18, 123], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float64)


@dataclass
class GridSample:
    """One sample of the grid: tensors on [0, 1], image (3, H, W), mask (1, H, W) with 1 = hole, and the three
    decodings of it (baseline; asymmetric with the mask; asymmetric with a full mask)."""

    key: str
    image: torch.Tensor
    mask: torch.Tensor
    baseline: torch.Tensor
    asymmetric: torch.Tensor
    asymmetric_full: torch.Tensor


def _font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(H, W) absolute error, mean over channels."""
    return (pred.double() - target.double()).abs().mean(0)


def error_scale(samples: list[GridSample]) -> float:
    """The error drawn at full heat: the `ERROR_PERCENTILE`th percentile of every error map the grid shows."""
    values = np.concatenate(
        [_error(d, s.image).flatten().numpy() for s in samples for d in (s.baseline, s.asymmetric, s.asymmetric_full)]
    )
    return max(float(np.percentile(values, ERROR_PERCENTILE)), 1e-6)


def _heat(error: torch.Tensor, scale: float) -> np.ndarray:
    """(H, W) absolute error -> (H, W, 3) uint8 on the heat scale, `scale` at full heat."""
    t = (error.double().clamp(0, scale) / scale).numpy() * (len(_HEAT) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_HEAT) - 2)
    frac = (t - lo)[..., None]
    return (_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).round().astype(np.uint8)


def _rgb(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).round().astype(np.uint8)


def zoom_window(image: torch.Tensor, mask: torch.Tensor) -> tuple[int, int, int]:
    """(top, left, side) of the most detailed square wholly outside the hole (the most preserved one when none
    is), a quarter of the short side (at least 8 px): where a decoder's loss of fine detail shows."""
    h, w = image.shape[-2:]
    side = min(max(8, min(h, w) // 4), h, w)
    stride = max(1, side // 4)
    gray = image.double().mean(0, keepdim=True)
    grad = torch.zeros_like(gray)
    grad[:, :, 1:] += (gray[:, :, 1:] - gray[:, :, :-1]).abs()
    grad[:, 1:, :] += (gray[:, 1:, :] - gray[:, :-1, :]).abs()
    detail = F.avg_pool2d(grad[None], side, stride)[0, 0]
    kept = F.avg_pool2d((1.0 - mask.double())[None], side, stride)[0, 0]
    whole = kept >= 1.0 - 1e-9
    score = torch.where(whole, detail, kept - 2.0) if whole.any() else kept
    idx = int(torch.argmax(score))
    r, c = divmod(idx, score.shape[1])
    return r * stride, c * stride, side


def row_labels(s: GridSample) -> list[list[str]]:
    """The label lines of the sample's three rows: decoder, then the sample's own numbers."""
    image, mask = s.image[None].double(), s.mask[None].double()
    kept = 1.0 - mask

    def scores(pred: torch.Tensor) -> list[str]:
        p = pred[None].double()
        return [
            f"pre_error {float(M.masked_mse(p, image, kept)[0]):.2e}",
            f"PSNR kept {float(M.psnr(p, image, kept)[0]):.2f} dB",
            f"PSNR hole {float(M.psnr(p, image, mask)[0]):.2f} dB",
        ]

    hole = f"hole {100 * float(s.mask.mean()):.0f}% of the image"
    base_full = float(M.psnr(s.baseline[None].double(), image)[0])
    return [
        [_short(s.key), "baseline", "(plain decoding, no branch)", *scores(s.baseline)],
        ["asymmetric, masked", hole, *scores(s.asymmetric)],
        [
            "asymmetric, full mask",
            "(whole image masked)",
            f"PSNR {float(M.psnr(s.asymmetric_full[None].double(), image)[0]):.2f} dB",
            f"baseline {base_full:.2f} dB",
        ],
    ]


def _short(key: str, limit: int = 28) -> str:
    return key if len(key) <= limit else "..." + key[-(limit - 3) :]


def _outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool hole -> the pixels along its edge, two wide (one on each side)."""
    pad = np.pad(mask, 1, mode="edge")
    neighbours = [pad[1:-1, :-2], pad[1:-1, 2:], pad[:-2, 1:-1], pad[2:, 1:-1]]
    grown = mask | np.logical_or.reduce(neighbours)
    shrunk = mask & np.logical_and.reduce(neighbours)
    return grown & ~shrunk


def _tile(
    pixels: np.ndarray, size: tuple[int, int], hole: np.ndarray | None, box: tuple[int, int, int] | None
) -> Image.Image:
    """Upscale (nearest) to `size` = (W, H); draw the hole's outline and the zoom box at the display scale."""
    w, h = size
    out = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.NEAREST)).copy()
    if hole is not None and hole.any() and not hole.all():
        big = np.asarray(Image.fromarray(hole).resize((w, h), Image.Resampling.NEAREST))
        out[_outline(big)] = _OUTLINE
    img = Image.fromarray(out)
    if box is not None:
        top, left, side = box
        fy, fx = h / pixels.shape[0], w / pixels.shape[1]
        ImageDraw.Draw(img).rectangle(
            (round(left * fx), round(top * fy), round((left + side) * fx) - 1, round((top + side) * fy) - 1),
            outline=_BOX,
            width=2,
        )
    return img


def _zoom(a: torch.Tensor, b: torch.Tensor, box: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    """The crop `box` of input `a` and decoding `b`, side by side, each upscaled (nearest) to `size`."""
    top, left, side = box
    pair = Image.new("RGB", (2 * size[0] + 2, size[1]), "white")
    for i, x in enumerate((a, b)):
        crop = _rgb(x[:, top : top + side, left : left + side])
        pair.paste(Image.fromarray(crop).resize(size, Image.Resampling.NEAREST), (i * (size[0] + 2), 0))
    return pair


def _legend(canvas: Image.Image, y: int, scale: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """The error scale as a colour bar with its range, and what the outline and the box mean."""
    width = 120
    ramp = _heat(torch.linspace(0, scale, width)[None].repeat(8, 1), scale)
    canvas.paste(Image.fromarray(ramp), (4, y + 3))
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (width + 10, y),
        f"|error| (mean over RGB on [0, 1]): black 0 to pale yellow >= {scale:.3g}, the {ERROR_PERCENTILE:g}th "
        "percentile of the errors shown",
        fill="black",
        font=font,
    )
    draw.text(
        (4, y + 15),
        "cyan: edge of the hole (1 = generated); green box: the zoomed preserved region",
        fill="black",
        font=font,
    )


COLUMNS = ("label", "branch", "decoding", "error", "zoom")
"""The grid's columns, for `cell`."""
ROWS = ("baseline", "asymmetric", "full_mask")
"""The rows of each sample, for `cell`."""


def _tile_size(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(W, H) of one tile: the image upscaled (nearest, by a whole factor) to at least `_TILE_MIN` px."""
    h, w = image_shape[-2:]
    scale = max(1, math.ceil(_TILE_MIN / max(h, w)))
    return w * scale, h * scale


def cell(image_shape: tuple[int, ...], sample: int, row: str, column: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in the grid of one cell: `sample`'s `row` (one of ROWS), `column` (COLUMNS)."""
    tw, th = _tile_size(image_shape)
    widths = [_LABEL_W, tw, tw, tw, 2 * th + 2]
    c, r = COLUMNS.index(column), ROWS.index(row)
    left = sum(widths[:c]) + 2 * c
    top = _HEADER + sample * (len(ROWS) * (th + 2) + _GAP) + r * (th + 2)
    return left, top, left + widths[c], top + th


def grid_image(samples: list[GridSample]) -> Image.Image:
    """The grid of `samples` (see the module docstring): three labelled rows per sample."""
    if not samples:
        raise ValueError("no samples to draw")
    shape = tuple(samples[0].image.shape)
    h, w = shape[-2:]
    tw, th = _tile_size(shape)
    right, bottom = cell(shape, len(samples) - 1, ROWS[-1], COLUMNS[-1])[2:]
    canvas = Image.new("RGB", (right, bottom + _GAP), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    err_scale = error_scale(samples)
    for column, title in zip(COLUMNS, _TITLES, strict=True):
        draw.text((cell(shape, 0, ROWS[0], column)[0] + 3, 3), title, fill="black", font=font)
    _legend(canvas, 18, err_scale, font)
    for n, s in enumerate(samples):
        hole = (s.mask[0] > 0.5).numpy()
        box = zoom_window(s.image, s.mask)
        masked_input = s.image.clone()
        masked_input[:, torch.from_numpy(hole)] = 1.0
        rows = [
            (_rgb(s.image), s.baseline, hole, box),
            (_rgb(masked_input), s.asymmetric, hole, box),
            (np.full((h, w, 3), 255, np.uint8), s.asymmetric_full, None, None),
        ]
        for row, (seen, decoded, outline, seen_box), lines in zip(ROWS, rows, row_labels(s), strict=True):
            at = {column: cell(shape, n, row, column)[:2] for column in COLUMNS}
            x, y = at["label"]
            for i, line in enumerate(lines):
                draw.text((x + 4, y + 4 + i * _LINE), line, fill="black", font=font)
            canvas.paste(_tile(seen, (tw, th), outline, seen_box), at["branch"])
            if row == "full_mask":
                draw.text((at["branch"][0] + 4, y + 4), "nothing: all masked", fill="gray", font=font)
            canvas.paste(_tile(_rgb(decoded), (tw, th), outline, box), at["decoding"])
            canvas.paste(_tile(_heat(_error(decoded, s.image), err_scale), (tw, th), outline, box), at["error"])
            canvas.paste(_zoom(s.image, decoded, box, (th, th)), at["zoom"])
    return canvas
