"""GroupNorm statistics shared by every tile of a tiled decode.

A decoder normalises its features with GroupNorm statistics of the whole image. Decoded tile by tile, each tile
normalises with its own instead, and where those differ from the whole image's the output shifts. For a
mask-conditioned decoder this is worst in tiles without any hole (every pixel kept): the paper's training masks
always have a hole (or are all hole), so such a tile's statistics are ones the decoder never saw, and its kept
pixels come out as badly as the base VAE's (docs/families/README.md has the measurement).

`SharedGroupNorm` patches every `nn.GroupNorm` of a module. While it is active, a *collecting* pass adds up, per
GroupNorm layer, sample and group, the mean and variance of the layer's input over all tiles (Chan's parallel
combination, in float64); `next_pass()` makes those the statistics every later tile is normalised with. The first
pass normalises each tile with its own statistics; each further pass with those summed in the pass before, which
moves them towards the whole image's (a fixed-point iteration).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["SharedGroupNorm"]


class _Moments:
    """Running count, mean and sum of squared deviations per (sample, group), combined tile by tile."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add a tile's (B, G, N) values."""
        var, mean = torch.var_mean(x.float(), dim=-1, correction=0)
        n, mean, m2 = x.shape[-1], mean.double(), var.double() * x.shape[-1]
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance), each (B, G) float64."""
        return self.mean, self.m2 / self.count


class SharedGroupNorm:
    """Normalise every tile of a tiled decode with statistics summed over all tiles (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self._sums: dict[int, _Moments] = {}
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._collect = True

    @contextlib.contextmanager
    def active(self) -> Iterator[SharedGroupNorm]:
        """Route every GroupNorm of the module through `_normalise` until the block ends."""
        for norm in self.norms:
            norm.forward = functools.partial(self._normalise, norm)
        try:
            yield self
        finally:
            for norm in self.norms:
                del norm.forward

    def next_pass(self, collect: bool = True) -> None:
        """Normalise from now on with the statistics summed so far; sum anew in the next pass if `collect`."""
        self._stats = {key: moments.mean_var() for key, moments in self._sums.items()}
        self._sums = {}
        self._collect = collect

    def _normalise(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        """`norm(x)`, summing `x`'s statistics, with the shared statistics once there are any."""
        b, c = x.shape[:2]
        if self._collect:
            self._sums.setdefault(id(norm), _Moments()).add(x.reshape(b, norm.num_groups, -1))
        if id(norm) not in self._stats:  # the first pass: the tile's own statistics
            return nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        # y = (x - mean) * rstd * weight + bias, as one per-channel scale and shift: a single pass over x.
        mean, var = (t.repeat_interleave(c // norm.num_groups, dim=1) for t in self._stats[id(norm)])
        scale = torch.rsqrt(var + norm.eps)
        if norm.affine:
            scale = scale * norm.weight.double()
        shift = -mean * scale + (norm.bias.double() if norm.affine else 0.0)
        view = (b, c) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.to(x.dtype).view(view), x, scale.to(x.dtype).view(view))
