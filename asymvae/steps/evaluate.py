"""The evaluate step: score the trained decoder against its baseline; flatten the numbers for KFP metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from asymvae.evaluation.config import EvalConfig
from asymvae.evaluation.run import EvalResult, evaluate


def evaluate_step(
    model_dir: str,
    baseline: str,
    data: str,
    out_dir: str,
    resolution: int = 256,
    max_images: int = 0,
    lpips: str = "shift_tolerant",
) -> EvalResult:
    """Run `asymvae eval` on the step's model; its report (metrics.json, metrics.md, grid.png, report.html) goes to
    `out_dir`."""
    cfg = EvalConfig(
        model=model_dir,
        baseline=baseline,
        data=data,
        out=out_dir,
        resolution=resolution,
        max_images=max_images or None,
        lpips=lpips,
        progress=False,
    )
    return evaluate(cfg)


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Every finite number of the summary as `case/decoder/metric` (e.g. `masked/asymmetric/pre_error`),
    plus `pre_error_ratio`: the keys KFP's Metrics artifact shows."""
    out: dict[str, float] = {}
    for case in ("masked", "full_mask"):
        for decoder, values in (summary.get(case) or {}).items():
            for name, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    out[f"{case}/{decoder}/{name}"] = float(value)
    ratio = summary.get("pre_error_ratio")
    if isinstance(ratio, (int, float)) and math.isfinite(ratio):
        out["pre_error_ratio"] = float(ratio)
    return out


def report_html(result: EvalResult) -> str:
    """The report as one HTML page with the grid inline: the report.html `asymvae eval` writes."""
    return Path(result.files["html"]).read_text()
