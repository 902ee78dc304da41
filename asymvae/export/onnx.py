"""The mask-conditioned decoder as an ONNX graph, and its check against PyTorch with onnxruntime.

Graph interface (all float32, NCHW):

* `latent` (batch, C, h, w): the latent **as the diffusion model produces it, i.e. scaled** (and for SD3 and
  FLUX shifted). The graph applies the family's transform from the VAE's config first, exactly as diffusers'
  pipelines do before `vae.decode` (`latent / scaling_factor + shift_factor`; SD: `latent / 0.18215`; see
  `asymvae.model.latent_space`), so a serving client passes the UNet's or transformer's output unchanged
  (FLUX: unpacked from its 2x2 patch sequence to (batch, 16, h, w) first).
* `image` (batch, 3, H, W) on [-1, 1], H = 8h, W = 8w: the original image (the hole's pixels are never read;
  they may be zeros).
* `mask` (batch, 1, H, W): 1 = hole (to generate), 0 = keep. An all-ones mask gives plain decoding.
* output `sample` (batch, 3, H, W) on about [-1, 1]: the decoded image (not clamped, not composited).

Batch, height and width are dynamic.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AsymmetricAutoencoderKL
from torch import nn

from asymvae.export.config import DEFAULT_OPSET
from asymvae.extras import require
from asymvae.model.latent_space import LatentTransform

log = logging.getLogger(__name__)

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "MaskConditionedDecoder",
    "ParityCheck",
    "export_onnx",
    "verify_onnx",
]

INPUT_NAMES = ("latent", "image", "mask")
OUTPUT_NAMES = ("sample",)
_DYNAMIC_AXES = {
    "latent": {0: "batch", 2: "latent_height", 3: "latent_width"},
    "image": {0: "batch", 2: "height", 3: "width"},
    "mask": {0: "batch", 2: "height", 3: "width"},
    "sample": {0: "batch", 2: "height", 3: "width"},
}


class MaskConditionedDecoder(nn.Module):
    """`AsymmetricAutoencoderKL`'s decode path as a module of (latent, image, mask) -> sample (see module doc)."""

    def __init__(self, vae: AsymmetricAutoencoderKL) -> None:
        super().__init__()
        if not isinstance(vae, AsymmetricAutoencoderKL):
            raise TypeError(f"the ONNX export needs an AsymmetricAutoencoderKL, got {type(vae).__name__}")
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.transform = LatentTransform.of(vae.config)

    def forward(self, latent: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decode a latent as the diffusion model produces it, conditioned on the image outside the hole."""
        z = self.post_quant_conv(self.transform.to_vae(latent))
        return self.decoder(z, image, mask)


def _example(vae: AsymmetricAutoencoderKL, batch: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    factor = 2 ** (len(vae.config.down_block_out_channels) - 1)
    latent = torch.randn(batch, vae.config.latent_channels, h, w, generator=g)
    image = torch.rand(batch, 3, h * factor, w * factor, generator=g) * 2 - 1
    mask = (torch.rand(batch, 1, h, w, generator=g) > 0.5).float()
    mask = torch.nn.functional.interpolate(mask, scale_factor=factor, mode="nearest")
    return latent, image, mask


def export_onnx(vae: AsymmetricAutoencoderKL, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the mask-conditioned decoder of `vae` to `path` (one self-contained .onnx file)."""
    onnx = require("onnx", "export", "the ONNX export")
    module = MaskConditionedDecoder(vae).eval().float()
    example = _example(vae, 1, 8, 8, seed=0)
    path = Path(path)
    # The TorchScript-based exporter: the decoder looks its branch features up in a dict keyed by the
    # string of a tensor shape, which tracing resolves once (the lookup's layer does not depend on the
    # size) but torch.export cannot turn into a graph with symbolic sizes.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about that shape-keyed lookup: expected, see above
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=_DYNAMIC_AXES,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


@dataclass
class ParityCheck:
    """onnxruntime against PyTorch on random inputs of one shape."""

    batch: int
    latent_height: int
    latent_width: int
    max_abs_error: float
    max_abs_value: float

    def as_dict(self) -> dict[str, float | int]:
        """For export reports."""
        return dict(self.__dict__)


def verify_onnx(
    vae: AsymmetricAutoencoderKL,
    path: Path,
    shapes: tuple[tuple[int, int, int], ...] = ((1, 8, 8), (2, 12, 16)),
) -> list[ParityCheck]:
    """Run the graph at `path` with onnxruntime (CPU) and the PyTorch module on the same random inputs.

    `shapes` are (batch, latent height, latent width); the defaults differ from the export's example
    shape in every dynamic axis, so a size baked into the graph would show.
    """
    ort = require("onnxruntime", "export", "the ONNX parity check")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = MaskConditionedDecoder(vae).eval().float()
    checks = []
    for i, (b, h, w) in enumerate(shapes):
        inputs = _example(vae, b, h, w, seed=1 + i)
        with torch.no_grad():
            expected = module(*inputs).numpy()
        (got,) = session.run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True)})
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} at {(b, h, w)}")
        err = float(np.abs(got - expected).max())
        checks.append(ParityCheck(b, h, w, err, float(np.abs(expected).max())))
        log.info("ONNX parity at batch %d, latent %dx%d: max abs error %.3g", b, h, w, err)
    return checks
