"""What one export makes: `ExportConfig` (also the options of `asymvae export`) and the formats' defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from asymvae.export import ExportError

DEFAULT_OPSET = 17
"""ONNX opset of the exported decoder."""
DEFAULT_MAX_BATCH = 8
"""Triton's `max_batch_size` for the exported decoder."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """A Triton/KServe-safe model name (letters, digits, `_`, `.`, `-`), else ValueError."""
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.' or '-' (it becomes a folder and a URL)")
    return name


Format = Literal["diffusers", "onnx", "triton"]
FORMATS = get_args(Format)


@dataclass
class ExportConfig:
    """One export."""

    model: str
    """A training export (`OUTPUT/step<N>`, holding `vae/`) or a diffusers VAE folder."""
    format: Format
    """`diffusers`, `onnx` or `triton`."""
    out: str
    """Target folder (for triton: the model repository root)."""
    name: str = "asymvae_decoder"
    """Model name: the Triton model folder, and the card's title."""
    eval: str | None = None
    """An `asymvae eval` metrics.json whose table goes into the model card; its score and held-out identity also
    go into the export's evaluation.json, which the deploy gate compares."""
    opset: int = DEFAULT_OPSET
    """ONNX opset."""
    max_batch_size: int = DEFAULT_MAX_BATCH
    """Triton's max_batch_size (dynamic batching merges requests up to it)."""
    force: bool = False
    """Replace an existing target that asymvae wrote (an earlier export); a folder it did not write is
    never replaced."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"--format {self.format!r} is not supported; choose one of {', '.join(FORMATS)}")
        try:
            check_model_name(self.name)
        except ValueError as e:
            raise ExportError(f"--name: {e}") from e

    @property
    def target(self) -> Path:
        """The folder that appears, complete, when the export succeeds."""
        out = Path(self.out)
        return out / self.name if self.format == "triton" else out
