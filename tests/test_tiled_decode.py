"""Mask-conditioned tiled decoding (asymvae.model.decode) on tiny random models."""

from __future__ import annotations

import itertools

import pytest
import torch

from asymvae.model.build import asymmetric_from_base
from asymvae.model.config import ModelConfig
from asymvae.model.decode import TileConfig, _ramps, decode_latents, tile_starts
from asymvae.model.tile_norm import SharedGroupNorm
from tests.support.tiny_models import make_base_vae


@pytest.fixture(scope="module")
def models():
    base = make_base_vae().eval()
    return base, asymmetric_from_base(base, ModelConfig(pretrained="unused", decoder="base")).eval()


def _inputs(h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, h, w, generator=g)
    image = torch.rand(2, 3, 8 * h, 8 * w, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 8 * h, 8 * w)
    mask[:, :, 8 : 8 * h // 2, 16 : 8 * w - 16] = 1
    return z, image, mask


@pytest.mark.parametrize(("length", "tile", "overlap"), [(32, 16, 4), (40, 16, 4), (17, 8, 2), (100, 64, 16)])
def test_tiles_cover_the_axis_with_the_overlap_asked_for(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    # The blending weights add up to one at every pixel (a weighted mean, so no brightness change at seams).
    total = torch.zeros(length * 8)
    for start, w in zip(starts, _ramps(starts, tile, 8), strict=True):
        assert w.min() > 0
        total[start * 8 : (start + tile) * 8] += w
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert tile_starts(tile, tile, overlap) == [0]


def test_one_tile_is_the_whole_image_decode(models):
    _, asym = models
    z, image, mask = _inputs(6, 10)
    with torch.no_grad():
        whole = decode_latents(asym, z, image, mask)
        assert torch.equal(decode_latents(asym, z, image, mask, TileConfig(size=80, overlap=16)), whole)
        assert torch.equal(whole, asym.decode(z, image=image, mask=mask).sample)


def test_each_tile_is_decoded_with_its_own_crop_of_image_and_mask(models):
    _, asym = models
    z, image, mask = _inputs(12, 16)
    tile = TileConfig(size=64, overlap=32, norm_passes=0)  # 8-latent tiles, 4 shared: 2 rows x 3 columns
    with torch.no_grad():
        tiled = decode_latents(asym, z, image, mask, tile)
        blind = decode_latents(asym, z, tile=tile)
        # The top-left tile's interior (no neighbour's weight there) is that tile decoded on its own crops.
        alone = asym.decode(z[..., :8, :8], image=image[..., :64, :64], mask=mask[..., :64, :64]).sample
        other = image.clone()
        other[..., 64:, :] = -image[..., 64:, :]  # change pixels the first row of tiles never reads
        changed = decode_latents(asym, z, other, mask, tile)
    assert tiled.shape == (2, 3, 96, 128)
    assert torch.allclose(tiled[..., :32, :32], alone[..., :32, :32], atol=1e-6)
    keep = (1 - mask).bool().expand_as(tiled)
    assert (tiled - blind).abs()[keep].mean() > 0.05  # the branch is used in every tile
    assert torch.equal(changed[..., :32, :], tiled[..., :32, :])
    assert not torch.equal(changed[..., 64:, :], tiled[..., 64:, :])


def test_shared_group_norm_normalises_each_tile_with_the_statistics_of_all_of_them():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 10, 12) * torch.linspace(0.1, 5, 12) + torch.linspace(-3, 3, 12)  # halves differ
    left, right = x[..., :5], x[..., 5:]
    shared = SharedGroupNorm(torch.nn.Sequential(norm))
    with torch.no_grad(), shared.active():
        assert torch.allclose(norm(left), torch.nn.functional.group_norm(left, 4, norm.weight, norm.bias))
        norm(right)  # first pass: each tile alone, the sums cover both
        shared.next_pass()
        both = torch.cat([norm(left), norm(right)], dim=-1)
    assert torch.allclose(both, norm(x), atol=1e-5)  # as if the whole input had been normalised at once
    assert "forward" not in vars(norm)  # the patch is gone after the block


def test_shared_statistics_change_every_tile_and_can_be_switched_off(models):
    _, asym = models
    z, image, mask = _inputs(12, 16)
    with torch.no_grad():
        own = decode_latents(asym, z, image, mask, TileConfig(size=64, overlap=32, norm_passes=0))
        shared = decode_latents(asym, z, image, mask, TileConfig(size=64, overlap=32, norm_passes=2))
        alone = asym.decode(z[..., :8, :8], image=image[..., :64, :64], mask=mask[..., :64, :64]).sample
    assert torch.allclose(own[..., :32, :32], alone[..., :32, :32], atol=1e-6)
    assert (shared[..., :32, :32] - alone[..., :32, :32]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="norm_passes must be 0 or more"):
        TileConfig(norm_passes=-1)


def test_a_plain_vae_decodes_tiled_too(models):
    base, _ = models
    z, _, _ = _inputs(12, 12)
    with torch.no_grad():
        whole, tiled = base.decode(z).sample, decode_latents(base, z, tile=TileConfig(size=64, overlap=32))
    assert tiled.shape == whole.shape and (tiled - whole).abs().mean() < whole.abs().mean()


def test_bad_tiling_requests_say_what_to_fix(models):
    base, asym = models
    z, image, mask = _inputs(6, 6)
    with pytest.raises(ValueError, match="below the tile size"):
        TileConfig(size=64, overlap=64)
    with pytest.raises(ValueError, match="tile size 60 is not a multiple of the decoder's upsampling factor 8"):
        decode_latents(asym, z, image, mask, TileConfig(size=60, overlap=16))
    with pytest.raises(ValueError, match="both image and mask"):
        decode_latents(asym, z, image=image)
    with pytest.raises(ValueError, match="AutoencoderKL has no mask branch"):
        decode_latents(base, z, image, mask)
    with pytest.raises(ValueError, match=r"image is \(2, 3, 40, 48\) but latents .* decode to batch 2 at 48x48"):
        decode_latents(asym, z, image[..., :40, :], mask)
