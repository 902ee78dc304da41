"""evaluation.json: the held-out evaluation an export was scored on, machine-readable, inside the export.

Every export given an `asymvae eval` metrics.json writes it: in a diffusers or ONNX export at the folder's root,
in a Triton export inside the model folder (`<root>/<name>/evaluation.json`, beside the model card; Triton reads
only `config.pbtxt` and the numbered version folders there). The deploy gate (asymvae.serving.gate) compares
two exports by it: the score is the asymmetric decoder's `pre_error` on the masked case (MSE of the preserved
region, lower is better), and two scores are comparable only when their `held_out` identities are equal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from asymvae.export import ExportError

EVALUATION_NAME = "evaluation.json"
FORMAT = "asymvae-evaluation/1"
METRIC = "masked/asymmetric/pre_error"
"""The score the gate compares: the trained decoder's MSE on the preserved region, masked case (lower is better)."""
HELD_OUT_KEYS = ("data", "split", "images", "resolution", "mask_seed", "latents", "decoding")
"""What identifies a held-out evaluation in metrics.json's summary: the data's URI and split, how many images,
the crop side, the masks' seed, where the latents came from and how the images were decoded. (The baseline's
path is recorded but not compared: the pipeline's is a per-run copy of the same base.)"""


@dataclass(frozen=True)
class Evaluation:
    """An export's score on one held-out evaluation."""

    pre_error: float
    """`METRIC` of the exported decoder."""
    baseline_pre_error: float | None
    """The same metric of the baseline VAE's decoder on the same images."""
    held_out: dict[str, Any]
    """The evaluation's identity (`HELD_OUT_KEYS`)."""

    @property
    def ratio(self) -> float | None:
        """pre_error relative to the baseline's (None without a positive baseline score)."""
        if not self.baseline_pre_error or not math.isfinite(self.baseline_pre_error):
            return None
        return self.pre_error / self.baseline_pre_error


def evaluation_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The evaluation.json of an export scored by `summary` (metrics.json's, already strict JSON)."""
    masked = summary["masked"]
    return {
        "format": FORMAT,
        "metric": METRIC,
        "pre_error": masked["asymmetric"]["pre_error"],
        "baseline_pre_error": masked["baseline"]["pre_error"],
        "pre_error_ratio": summary.get("pre_error_ratio"),
        "held_out": {key: summary.get(key) for key in HELD_OUT_KEYS},
        "model": summary.get("model"),
        "baseline": summary.get("baseline"),
        "scores": {case: summary[case] for case in ("masked", "full_mask") if case in summary},
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def parse_evaluation(text: str | bytes, where: str) -> Evaluation:
    """The Evaluation an evaluation.json holds; ExportError naming `where` when it is not one."""
    try:
        record = json.loads(text)
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
        score = _number(record["pre_error"])
        if score is None:
            raise ValueError(f"pre_error {record['pre_error']!r} is not a finite number")
        held_out = record["held_out"]
        if not isinstance(held_out, dict):
            raise ValueError("held_out is not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ExportError(f"{where} is not an evaluation.json written by `asymvae export --eval` ({e})") from e
    return Evaluation(score, _number(record.get("baseline_pre_error")), held_out)
