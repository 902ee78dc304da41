"""The evaluation report: metrics.json, a Markdown table (metrics.md), a PNG grid of samples (grid.png) and all of
it in one HTML page (report.html), the page the pipeline's evaluate step shows too."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from asymvae.evaluation.grid import GridSample, grid_image
from asymvae.evaluation.html import html_report
from asymvae.storage.local import check_files_replaceable, mark_written, write_atomic

__all__ = ["REPORT_FILES", "check_report_target", "markdown_table", "write_report"]

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


REPORT_FILES = ["grid.png", "metrics.md", "report.html", "metrics.json"]


def check_report_target(out_dir: Path) -> None:
    """Raise a StorageError when `out_dir` holds a report file asymvae did not write (call before the work)."""
    check_files_replaceable(Path(out_dir), REPORT_FILES)


def write_report(
    out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], grid: list[GridSample]
) -> dict[str, Path]:
    """Write grid.png, metrics.md, report.html and, last, metrics.json (each via a temporary name); return their
    paths. Files of those names that asymvae did not write are never overwritten (`check_report_target`)."""
    out_dir = Path(out_dir)
    check_report_target(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_written(out_dir)
    files: dict[str, Path] = {}
    png = None
    if grid:
        buf = io.BytesIO()
        grid_image(grid).save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
        files["grid"] = out_dir / "grid.png"
        write_atomic(files["grid"], png)
    table = markdown_table(summary)
    files["markdown"] = out_dir / "metrics.md"
    write_atomic(files["markdown"], table.encode())
    files["html"] = out_dir / "report.html"
    write_atomic(files["html"], html_report(table, png).encode())
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
