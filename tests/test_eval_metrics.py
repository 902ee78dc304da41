"""Evaluation metrics against hand-computed values and scikit-image; region metrics; the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asymvae.evaluation import metrics as M
from asymvae.evaluation.report import markdown_table


def const(value: float, shape=(1, 3, 16, 16)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float32)


def test_psnr_is_computed_in_float_where_uint8_arithmetic_wraps_around():
    pred_u8 = np.full((16, 16, 3), 10, dtype=np.uint8)
    target_u8 = np.full((16, 16, 3), 20, dtype=np.uint8)
    # By hand: every pixel is off by 10 levels, MSE = (10/255)^2, PSNR = 20 log10(255/10) = 28.13 dB.
    expected = 20 * math.log10(255 / 10)
    got = M.psnr(const(10 / 255), const(20 / 255))
    assert got.shape == (1,) and float(got) == pytest.approx(expected, abs=1e-4)
    # The reference engine's way: subtract uint8 arrays. 10 - 20 wraps to 246, so the "MSE" is 246^2.
    wrapped = ((pred_u8 - target_u8).astype(np.float64) ** 2).mean()
    uint8_psnr = 10 * math.log10(255**2 / wrapped)
    assert uint8_psnr == pytest.approx(20 * math.log10(255 / 246), abs=1e-6)
    assert abs(uint8_psnr - expected) > 25
    with pytest.raises(TypeError, match="float"):
        M.psnr(torch.from_numpy(pred_u8).permute(2, 0, 1)[None], torch.from_numpy(target_u8).permute(2, 0, 1)[None])


def test_region_mse_and_psnr_by_hand():
    target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:8, 4:12] = 1  # 32 of 256 pixels
    mask[1, :, :, :8] = 1  # half of the image
    pred = target + 0.1 * mask  # wrong by exactly 0.1 in the hole, exact outside it
    hole, kept = M.masked_mse(pred, target, mask), M.masked_mse(pred, target, 1 - mask)
    assert hole.tolist() == pytest.approx([0.01, 0.01])
    assert kept.tolist() == pytest.approx([0.0, 0.0], abs=1e-15)
    assert M.masked_mse(pred, target).tolist() == pytest.approx([0.01 * 32 / 256, 0.01 * 0.5])
    assert M.psnr(pred, target, mask).tolist() == pytest.approx([20.0, 20.0])
    assert M.psnr(pred, target, 1 - mask).tolist() == pytest.approx([100.0, 100.0])  # the MSE floor
    assert M.psnr(pred, target).tolist() == pytest.approx([10 * math.log10(256 / 0.32), 10 * math.log10(200)])


def test_an_empty_region_is_nan_not_zero():
    x = torch.rand(1, 3, 16, 16)
    empty = torch.zeros(1, 1, 16, 16)
    assert math.isnan(float(M.masked_mse(x, x * 0.5, empty)))
    assert math.isnan(float(M.psnr(x, x * 0.5, empty)))
    with pytest.raises(ValueError, match="region weight"):
        M.masked_mse(x, x, torch.ones(1, 3, 16, 16))


def test_ssim_matches_scikit_image_and_regions_average_its_map():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 40, 48, generator=g)
    pred = (target + 0.15 * torch.randn(2, 3, 40, 48, generator=g)).clamp(0, 1)
    ours = M.ssim(pred, target)
    for i in range(2):
        reference = structural_similarity(
            pred[i].numpy().astype(np.float64),
            target[i].numpy().astype(np.float64),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ours[i]) == pytest.approx(reference, abs=1e-6)
    assert M.ssim(target, target).tolist() == pytest.approx([1.0, 1.0])
    assert M.ssim(pred, target, torch.ones(2, 1, 40, 48)).tolist() == pytest.approx(ours.tolist())
    # Damage only the left half: SSIM over the right half (away from the seam) stays 1.
    mask = torch.zeros(2, 1, 40, 48)
    mask[..., :24] = 1
    half = torch.where(mask.bool().expand_as(target), pred, target)
    right = torch.zeros_like(mask)
    right[..., 30:] = 1
    assert M.ssim(half, target, right).tolist() == pytest.approx([1.0, 1.0])
    assert (M.ssim(half, target, mask) < 0.9).all()


@pytest.fixture(scope="module")
def st_lpips():
    from asymvae.losses.config import LPIPSConfig
    from asymvae.losses.perceptual import build_lpips

    return build_lpips(LPIPSConfig(weight=1.0, net="alex", variant="shift_tolerant"))


def test_lpips_regions_come_from_the_spatial_map(st_lpips):
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 64, 64, generator=g)
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 16:48, 8:40] = 1
    noisy = (target + 0.3 * torch.randn(2, 3, 64, 64, generator=g) * mask).clamp(0, 1)
    assert M.lpips_distance(st_lpips, target, target).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    full = M.lpips_distance(st_lpips, noisy, target)
    lp_map = M.lpips_map(st_lpips, noisy, target)
    assert lp_map.shape == (2, 1, 64, 64)
    assert st_lpips.spatial is False  # switched back
    # Bilinear upsampling keeps the mean of each layer's map up to border effects.
    assert M.masked_mean(lp_map).tolist() == pytest.approx(full.tolist(), rel=0.05)
    hole, kept = M.masked_mean(lp_map, mask), M.masked_mean(lp_map, 1 - mask)
    assert (hole > 2 * kept).all()


def _summary() -> dict:
    side = {"psnr": 20.0, "psnr_hole": 18.0, "psnr_preserved": 22.0, "pre_error": 0.004, "ssim": 0.5}
    better = {**side, "psnr_preserved": 30.0, "pre_error": 0.001}
    return {
        "masked": {"baseline": side, "asymmetric": better},
        "full_mask": {"baseline": {"psnr": 20.0, "ssim": 0.5}, "asymmetric": {"psnr": 20.5, "ssim": 0.52}},
        "images": 3,
        "data": "builtin:demo",
        "resolution": 64,
        "mask_seed": 7,
        "mean_hole_share": 0.25,
        "latents": "baseline encoder, posterior mode",
        "pre_error_ratio": 0.25,
    }


def test_markdown_table():
    table = markdown_table(_summary())
    assert "| masked | pre_error: MSE ↓ | preserved | 4.000e-03 | 1.000e-03 |" in table
    assert "| full mask | PSNR (dB) ↑ | full image | 20.00 | 20.50 |" in table
    assert "**0.250**" in table
