"""Speed settings of the decode path: torch.compile of the decoder and channels-last conv weights.

`apply_decode_speed(vae, DecodeSpeed(compile="default"))` compiles `vae.decoder` in place (static shapes, the
module stays the same `MaskConditionDecoder` with the same state dict), so `vae.decode(z, image=, mask=)` and
`asymvae.model.decode.decode_latents` run compiled; the first decode at each new shape compiles (seconds on a
small model, a minute or more on a released one). It records the settings on the VAE (`decode_speed_of`), which
`decode_latents` reads:

* with a CUDA-graph mode (`reduce-overhead`, `max-autotune`) a compiled call's output lives in the graph's
  memory and the next call overwrites it; `decode_latents` marks a new step before each decode and returns a
  copy, so its results stay valid;
* tiled decoding with shared GroupNorm statistics (`asymvae.model.tile_norm`) swaps the forward of every
  GroupNorm between passes, which a compiled graph does not see; `decode_latents` runs those tiles eagerly
  (`torch.compiler.set_stance("force_eager")`), so a compiled VAE still decodes tiles correctly, without gain.

Whether a setting pays is measured on a GPU by benchmarks/decode_throughput.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # torch and diffusers load when a decoder is sped up, not when options are read
    from asymvae.model.build import VAE

__all__ = ["COMPILE_MODES", "CUDA_GRAPH_MODES", "DecodeSpeed", "apply_decode_speed", "decode_speed_of"]

CompileMode = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune"]
COMPILE_MODES = get_args(CompileMode)
"""`DecodeSpeed.compile` values: off, or a torch.compile mode."""
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
"""The compile modes that replay CUDA graphs (on a GPU), whose outputs the next call overwrites."""
_ATTR = "_asymvae_decode_speed"


@dataclass(frozen=True)
class DecodeSpeed:
    """How the decoder runs: compiled or eager, channels-last or NCHW weights. Neither changes what it computes
    beyond rounding."""

    compile: CompileMode = "off"
    """`off` (eager), or the torch.compile mode of the decoder: `default`, `max-autotune-no-cudagraphs`,
    `reduce-overhead` or `max-autotune` (the last two replay CUDA graphs on a GPU)."""
    channels_last: bool = False
    """Keep the decoder's conv weights (and so its activations) in channels-last layout."""

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}; got {self.compile!r}")

    @property
    def compiled(self) -> bool:
        """Whether the decoder is compiled."""
        return self.compile != "off"

    @property
    def cudagraphs(self) -> bool:
        """Whether the compiled decoder replays CUDA graphs (its outputs are overwritten by the next call)."""
        return self.compile in CUDA_GRAPH_MODES


def apply_decode_speed(vae: VAE, speed: DecodeSpeed) -> None:
    """Apply `speed` to `vae` in place: channels-last decoder weights if asked, `vae.decoder` compiled with
    static shapes unless `speed.compile` is off. Call once per VAE, before its first decode."""
    import torch

    if decode_speed_of(vae) != DecodeSpeed():
        raise ValueError(f"decode speed settings were already applied to this VAE: {decode_speed_of(vae)}")
    if speed.channels_last:
        vae.post_quant_conv.to(memory_format=torch.channels_last)
        vae.decoder.to(memory_format=torch.channels_last)
    if speed.compiled:
        mode = None if speed.compile == "default" else speed.compile
        vae.decoder.compile(dynamic=False, mode=mode)
    setattr(vae, _ATTR, speed)


def decode_speed_of(vae: VAE) -> DecodeSpeed:
    """The settings `apply_decode_speed` applied to `vae` (eager NCHW, the default, when none were)."""
    return getattr(vae, _ATTR, DecodeSpeed())
