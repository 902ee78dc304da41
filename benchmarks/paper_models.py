"""The models the GPU benchmarks measure, and two helpers they share (imported from the scripts' own folder).

SD's encoder sizes with the paper's decoders, as in the project's anchor measurements: x1.5 = up widths
[192, 384, 768, 768], 3 layers per up block (160.1M trainable parameters with post_quant_conv); x2 = [256, 512,
1024, 1024], 5 layers (372M). `TINY` is a toy of the same layout for the CPU smoke runs. Weights are random
(no hub here); the cost is the same as with SD's weights.
"""

from __future__ import annotations

import gc

import torch

ENCODER = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    down_block_out_channels=[128, 256, 512, 512],
    layers_per_down_block=2,
    up_block_types=["UpDecoderBlock2D"] * 4,
    latent_channels=4,
    norm_num_groups=32,
)
DECODERS = {
    "x1.5": dict(up_block_out_channels=[192, 384, 768, 768], layers_per_up_block=3),
    "x2": dict(up_block_out_channels=[256, 512, 1024, 1024], layers_per_up_block=5),
}
X15 = dict(ENCODER, **DECODERS["x1.5"])
X2 = dict(ENCODER, **DECODERS["x2"])
TINY = dict(
    ENCODER,
    down_block_out_channels=[32, 32, 64, 64],
    up_block_out_channels=[32, 32, 64, 64],
    layers_per_down_block=1,
    layers_per_up_block=1,
    norm_num_groups=8,
)


def sync(device: str) -> None:
    """Wait for the GPU's queued work (timings end here); nothing on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    """Drop the last arm's compiled graphs and cached memory before the next arm."""
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()
