"""The evaluation report: metrics.json, a Markdown table (metrics.md) and a PNG grid of samples (grid.png)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from asymvae.storage.local import check_files_replaceable, mark_written, write_atomic

__all__ = [
    "ERROR_SCALE",
    "REPORT_FILES",
    "GridSample",
    "check_report_target",
    "grid_image",
    "markdown_table",
    "write_report",
]

ERROR_SCALE = 0.25
"""Absolute error (mean over channels, on [0, 1]) drawn at full heat in the grid; larger errors saturate."""
_TILE_MIN = 128
_HEADER = 18
_COLUMNS = ("input", "mask (white = hole)", "baseline", "asymmetric", "|error| baseline", "|error| asymmetric")
# Black -> purple -> orange -> pale yellow, a perceptually ordered heat scale.
_HEAT = np.array([[0, 0, 4], [80, 18, 123], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float64)

_ROWS = (
    ("psnr", "PSNR (dB) ↑", "full image"),
    ("psnr_hole", "PSNR (dB) ↑", "hole"),
    ("psnr_preserved", "PSNR (dB) ↑", "preserved"),
    ("ssim", "SSIM ↑", "full image"),
    ("ssim_hole", "SSIM ↑", "hole"),
    ("ssim_preserved", "SSIM ↑", "preserved"),
    ("lpips", "LPIPS ↓", "full image"),
    ("lpips_hole", "LPIPS ↓", "hole"),
    ("lpips_preserved", "LPIPS ↓", "preserved"),
    ("pre_error", "pre_error: MSE ↓", "preserved"),
)


@dataclass
class GridSample:
    """One row of the grid: tensors on [0, 1], image (3, H, W), mask (1, H, W) with 1 = hole."""

    key: str
    image: torch.Tensor
    mask: torch.Tensor
    baseline: torch.Tensor
    asymmetric: torch.Tensor


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if name.startswith("psnr"):
        return f"{value:.2f}"
    if name == "pre_error":
        return f"{value:.3e}"
    return f"{value:.4f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The metrics as a Markdown table: one row per metric and region, baseline vs asymmetric decoder."""
    lines = ["| case | metric | region | baseline | asymmetric |", "|---|---|---|---|---|"]
    for cond, label in (("masked", "masked"), ("full_mask", "full mask")):
        base, asym = summary[cond]["baseline"], summary[cond]["asymmetric"]
        for key, metric, region in _ROWS:
            if key in base or key in asym:
                lines.append(
                    f"| {label} | {metric} | {region} | {_fmt(key, base.get(key))} | {_fmt(key, asym.get(key))} |"
                )
    ratio = summary.get("pre_error_ratio")
    notes = [
        "",
        f"{summary['images']} images of `{summary['data']}` at {summary['resolution']}², fixed masks "
        f"(seed {summary['mask_seed']}, mean hole {100 * summary['mean_hole_share']:.1f}% of the image); "
        f"latents from the {summary['latents']}; decoded images clamped to [0, 1], not composited.",
    ]
    if ratio is not None and not math.isnan(ratio):
        notes.append(f"pre_error ratio (asymmetric / baseline): **{ratio:.3f}**.")
    if summary.get("decoding", "whole images") != "whole images":
        notes.append(f"Decoded in {summary['decoding']} (asymvae.model.decode), both decoders alike.")
    if summary.get("lpips"):
        notes.append(f"LPIPS: {summary['lpips']}.")
    return "\n".join(lines + notes) + "\n"


def _heat(error: torch.Tensor) -> np.ndarray:
    """(H, W) absolute error -> (H, W, 3) uint8 on the heat scale."""
    t = (error.double().clamp(0, ERROR_SCALE) / ERROR_SCALE).numpy() * (len(_HEAT) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_HEAT) - 2)
    frac = (t - lo)[..., None]
    return (_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).round().astype(np.uint8)


def _rgb(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).round().astype(np.uint8)


def grid_image(samples: list[GridSample]) -> Image.Image:
    """input | mask | baseline | asymmetric | baseline error | asymmetric error, one row per sample."""
    if not samples:
        raise ValueError("no samples to draw")
    h, w = samples[0].image.shape[-2:]
    scale = max(1, math.ceil(_TILE_MIN / max(h, w)))
    th, tw = h * scale, w * scale
    canvas = Image.new("RGB", (tw * len(_COLUMNS), _HEADER + th * len(samples)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for c, title in enumerate(_COLUMNS):
        draw.text((c * tw + 3, 3), title, fill="black", font=font)
    for r, s in enumerate(samples):
        hole = s.mask[0] > 0.5
        shown_mask = s.image.clone()
        shown_mask[:, hole] = 1.0
        tiles = [
            _rgb(s.image),
            _rgb(shown_mask),
            _rgb(s.baseline),
            _rgb(s.asymmetric),
            _heat((s.baseline - s.image).abs().mean(0)),
            _heat((s.asymmetric - s.image).abs().mean(0)),
        ]
        for c, tile in enumerate(tiles):
            img = Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST)
            canvas.paste(img, (c * tw, _HEADER + r * th))
    return canvas


REPORT_FILES = ["grid.png", "metrics.md", "metrics.json"]


def check_report_target(out_dir: Path) -> None:
    """Raise a StorageError when `out_dir` holds a report file asymvae did not write (call before the work)."""
    check_files_replaceable(Path(out_dir), REPORT_FILES)


def write_report(
    out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], grid: list[GridSample]
) -> dict[str, Path]:
    """Write grid.png, metrics.md and, last, metrics.json (each via a temporary name); return their paths.
    Files of those names that asymvae did not write are never overwritten (`check_report_target`)."""
    out_dir = Path(out_dir)
    check_report_target(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_written(out_dir)
    files: dict[str, Path] = {}
    if grid:
        import io

        buf = io.BytesIO()
        grid_image(grid).save(buf, format="PNG", optimize=True)
        files["grid"] = out_dir / "grid.png"
        write_atomic(files["grid"], buf.getvalue())
    files["markdown"] = out_dir / "metrics.md"
    write_atomic(files["markdown"], markdown_table(summary).encode())
    files["json"] = out_dir / "metrics.json"
    payload = {"summary": summary, "per_image": rows}
    write_atomic(files["json"], (json.dumps(_finite(payload), indent=1) + "\n").encode())
    return files


def _finite(value: Any) -> Any:
    """NaN/inf -> None, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
