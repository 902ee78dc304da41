"""Decode latents with the mask branch: the whole image at once, or in overlapping tiles blended together.

diffusers' `AsymmetricAutoencoderKL` has no tiling (`enable_tiling()` raises NotImplementedError), so a large
image is decoded whole: at 2048² the full-resolution activations alone take gigabytes. `decode_latents` with a
`TileConfig` decodes overlapping latent tiles one at a time, each with its own crop of `image` and `mask`, so the
mask branch sees every tile's image and mask; tiles are blended with linear ramps across their overlaps
(a weighted mean with weights that rise from the tile's edge to its interior). Memory is then one tile's
activations plus the output.

Each tile is normalised with GroupNorm statistics shared by all tiles (`asymvae.model.tile_norm`), estimated in
`TileConfig.norm_passes` extra passes over the tiles: with each tile's own statistics, the kept pixels of tiles
without any hole come out as badly as the base VAE's. The result is still not bit-equal to the whole-image decode
(the mid-block attention sees one tile, convolutions are zero-padded at tile edges); docs/families/README.md has
the measured difference, the seams and the peak memory (benchmarks/tiled_decode.py). A tile at least as large as
the image is the whole-image decode.

A VAE given speed settings (`asymvae.model.decode_speed.apply_decode_speed`: compiled decoder, CUDA graphs) decodes
through the same functions: results are copied out of CUDA-graph memory, and tiles with shared statistics run
eagerly (that module's docstring says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.model.build import VAE
from asymvae.model.decode_speed import decode_speed_of
from asymvae.model.tile_norm import SharedGroupNorm

__all__ = ["TileConfig", "decode_latents", "tile_option", "tile_starts", "upsampling_factor"]


@dataclass(frozen=True)
class TileConfig:
    """Tiled decoding: tile size and overlap, in output pixels."""

    size: int = 512
    """Side of a tile in pixels; a multiple of the decoder's upsampling factor (8 for every released family)."""
    overlap: int = 128
    """Pixels neighbouring tiles share, blended linearly; a multiple of the upsampling factor, below `size`.
    More overlap hides seams better and costs more tiles."""
    norm_passes: int = 2
    """Passes over all tiles that estimate the whole image's GroupNorm statistics before the output pass; each
    costs one more decode of every tile. 0: each tile normalises with its own (as diffusers' AutoencoderKL tiling
    does)."""

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"tile size must be positive, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap must be at least 0 and below the tile size {self.size}, got {self.overlap}")
        if self.norm_passes < 0:
            raise ValueError(f"tile norm_passes must be 0 or more, got {self.norm_passes}")

    def in_latents(self, factor: int) -> tuple[int, int]:
        """(tile, overlap) in latent pixels for a decoder that upsamples by `factor`."""
        bad = [f"{name} {v}" for name, v in (("size", self.size), ("overlap", self.overlap)) if v % factor]
        if bad:
            verb = "is not a multiple" if len(bad) == 1 else "are not multiples"
            raise ValueError(f"tile {' and '.join(bad)} {verb} of the decoder's upsampling factor {factor}")
        return self.size // factor, self.overlap // factor


def tile_option(tile: int | None, overlap: int) -> TileConfig | None:
    """The `TileConfig` of the command-line options `--tile PX --tile-overlap PX` (None: whole images); a
    ValueError that names both options when they do not make one."""
    if tile is None:
        return None
    try:
        return TileConfig(size=tile, overlap=overlap)
    except ValueError as e:
        raise ValueError(f"--tile {tile} --tile-overlap {overlap}: {e}") from e


def upsampling_factor(vae: VAE) -> int:
    """How many output pixels one latent pixel becomes along each side (8 for every released family)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of `tile` covering `[0, length)`, spread evenly, neighbours sharing at least `overlap`;
    the first starts at 0 and the last ends at `length`. One tile (`[0]`) when `length <= tile`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramps(starts: list[int], tile: int, factor: int) -> list[torch.Tensor]:
    """Per tile, 1-D blending weights over its output pixels: rising across the overlap with the previous tile,
    falling across the overlap with the next one, 1 elsewhere (and at the image border)."""
    weights = []
    for i, start in enumerate(starts):
        x = torch.arange(tile * factor, dtype=torch.float32) + 0.5
        w = torch.ones_like(x)
        if i > 0:
            w = torch.minimum(w, x / ((starts[i - 1] + tile - start) * factor))
        if i < len(starts) - 1:
            w = torch.minimum(w, (tile * factor - x) / ((start + tile - starts[i + 1]) * factor))
        weights.append(w)
    return weights


def _decode_whole(vae: VAE, z: torch.Tensor, image: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    cudagraphs = decode_speed_of(vae).cudagraphs
    if cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()  # this call may overwrite the previous call's output
    out = vae.decode(z).sample if image is None else vae.decode(z, image=image, mask=mask).sample
    return out.clone() if cudagraphs else out  # out of the CUDA graph's memory, which the next call reuses


def _check(vae: VAE, z: torch.Tensor, image: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    if (image is None) != (mask is None):
        raise ValueError("give both image and mask (the mask branch reads the image outside the mask) or neither")
    if image is None:
        return
    if not isinstance(vae, AsymmetricAutoencoderKL):
        raise ValueError(f"a {type(vae).__name__} has no mask branch: decode it without image and mask")
    f = upsampling_factor(vae)
    want = (z.shape[0], z.shape[-2] * f, z.shape[-1] * f)
    for name, t in (("image", image), ("mask", mask)):
        if (t.shape[0], *t.shape[-2:]) != want:
            raise ValueError(
                f"{name} is {tuple(t.shape)} but latents of {tuple(z.shape)} decode to batch {want[0]} at "
                f"{want[1]}x{want[2]} px: give the {name} at that size and batch"
            )


def decode_latents(
    vae: VAE,
    z: torch.Tensor,
    image: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    tile: TileConfig | None = None,
) -> torch.Tensor:
    """Decode `z` (the VAE's own latent space, as `vae.decode` takes it) to pixels on about [-1, 1].

    With `image` ((B, 3, H, W) on [-1, 1]) and `mask` ((B, 1, H, W), 1 = hole, 0 = keep) an
    `AsymmetricAutoencoderKL` conditions on the image outside the hole; without them any VAE decodes plainly.
    `tile`: decode in overlapping tiles (see the module docstring); None: the whole latent at once.
    """
    _check(vae, z, image, mask)
    f = upsampling_factor(vae)
    if tile is None:
        return _decode_whole(vae, z, image, mask)
    side, overlap = tile.in_latents(f)
    h, w = z.shape[-2:]
    tile_h, tile_w = min(side, h), min(side, w)
    ys, xs = tile_starts(h, tile_h, overlap), tile_starts(w, tile_w, overlap)
    if len(ys) == len(xs) == 1:
        return _decode_whole(vae, z, image, mask)
    grid = _Grid(ys, xs, tile_h, tile_w, f)
    if tile.norm_passes == 0:
        return grid.decode(vae, z, image, mask)
    shared = SharedGroupNorm(vae.decoder)
    # A compiled decoder would not see the GroupNorms' swapped forwards: the tiles run eagerly.
    with shared.active(), torch.compiler.set_stance("force_eager"):
        for done in range(1, tile.norm_passes + 1):
            grid.decode(vae, z, image, mask, blend=False)
            shared.next_pass(collect=done < tile.norm_passes)
        return grid.decode(vae, z, image, mask)


@dataclass(frozen=True)
class _Grid:
    """Tile offsets (latent pixels) along each axis, the tile size and the upsampling factor."""

    ys: list[int]
    xs: list[int]
    tile_h: int
    tile_w: int
    factor: int

    def decode(
        self,
        vae: VAE,
        z: torch.Tensor,
        image: torch.Tensor | None,
        mask: torch.Tensor | None,
        blend: bool = True,
    ) -> torch.Tensor | None:
        """Decode every tile; blended into the output image, or (`blend=False`) only for the GroupNorm sums."""
        f, (h, w) = self.factor, z.shape[-2:]
        out = total = piece = None
        for y, wy in zip(self.ys, _ramps(self.ys, self.tile_h, f), strict=True):
            for x, wx in zip(self.xs, _ramps(self.xs, self.tile_w, f), strict=True):
                px = (..., slice(y * f, (y + self.tile_h) * f), slice(x * f, (x + self.tile_w) * f))
                piece = _decode_whole(
                    vae,
                    z[..., y : y + self.tile_h, x : x + self.tile_w],
                    None if image is None else image[px],
                    None if mask is None else mask[px],
                )
                if not blend:
                    continue
                if out is None:  # float32 sums, whatever the VAE's dtype
                    out = torch.zeros(z.shape[0], piece.shape[1], h * f, w * f, device=piece.device)
                    total = torch.zeros(1, 1, h * f, w * f, device=piece.device)
                weight = (wy[:, None] * wx[None, :]).to(piece.device)
                out[px] += piece.float() * weight
                total[px] += weight
        return None if out is None else (out / total).to(piece.dtype)
