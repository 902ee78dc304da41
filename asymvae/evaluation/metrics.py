"""Image-quality metrics over the whole image or a region of it, as pure functions of float tensors.

Every function takes images as float tensors of shape (B, C, H, W) with values in [0, 1] and returns one
value per image, shape (B,). Integer tensors are refused: uint8 arithmetic wraps around (10 - 20 = 246),
which is how the reference engine reported 27.9 dB where 7.75 dB was right.

A region is a weight map of shape (B, 1, H, W) holding 1 on the pixels that count and 0 elsewhere (for
the inpainting hole pass the mask, for the preserved region `1 - mask`). An empty region gives NaN for
that image; `nanmean` over images then skips it.

* **MSE / PSNR** on a region: the mean of the squared error over the region's pixels and all channels,
  `sum(w * (x - y)^2) / (C * sum(w))`; PSNR is `10 log10(1 / MSE)`, with MSE floored at 1e-10 (100 dB) so
  that identical images give a finite number.
* **SSIM**: the Gaussian-window SSIM of Wang et al. (11x11 window, sigma 1.5, K1 0.01, K2 0.03, data
  range 1), computed per channel on windows lying wholly inside the image (the "valid" positions, as
  scikit-image crops them) and averaged over channels. On a region it is the mean of that SSIM map over
  the region's pixels, each pixel standing for the window centred on it (pixels within 5 px of the
  border have no window and are left out). Windows near the region's edge also see the other region.
* **LPIPS** over the whole image is the network's ordinary output. On a region it is the mean, over
  the region's pixels, of the network's spatial map (`spatial=True`: each layer's distance map
  bilinearly upsampled to the image size and summed over layers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MSE_FLOOR",
    "SSIM_WINDOW",
    "lpips_distance",
    "lpips_map",
    "masked_mean",
    "masked_mse",
    "psnr",
    "psnr_from_mse",
    "ssim",
    "ssim_map",
]

MSE_FLOOR = 1e-10
"""Smallest MSE used for PSNR, so identical images score 100 dB rather than infinity."""
SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, t in (("prediction", x), ("target", y)):
        if not t.is_floating_point():
            raise TypeError(
                f"{name} has dtype {t.dtype}: metrics need float images on [0, 1] (integer arithmetic wraps around)"
            )
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(t.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"prediction {tuple(x.shape)} and target {tuple(y.shape)} differ in shape")


def _check_weight(weight: torch.Tensor, like: torch.Tensor) -> None:
    b, _, h, w = like.shape
    if weight.shape != (b, 1, h, w):
        raise ValueError(f"region weight must be (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(weight.shape)}")


def masked_mean(values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean of `values` (B, C, H, W) over the pixels where `weight` (B, 1, H, W) is 1 (NaN if none)."""
    v = values.double()
    if weight is None:
        return v.flatten(1).mean(1)
    _check_weight(weight, values)
    w = weight.double()
    total = (v * w).flatten(1).sum(1)
    count = w.flatten(1).sum(1) * values.shape[1]
    return torch.where(count > 0, total / count.clamp_min(1e-300), torch.full_like(total, math.nan))


def masked_mse(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean squared error over the region `weight` (all pixels when None), in float64."""
    _check_pair(x, y)
    return masked_mean((x.double() - y.double()) ** 2, weight)


def psnr_from_mse(mse: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB from an MSE, `10 log10(data_range^2 / mse)`; NaN stays NaN."""
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(MSE_FLOOR))


def psnr(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR (dB) of float images on [0, 1], over the region `weight` (all pixels when None)."""
    return psnr_from_mse(masked_mse(x, y, weight))


def _gaussian_window(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    coords = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM at every valid window position, averaged over channels: (B, 1, H - 10, W - 10), in float64."""
    _check_pair(x, y)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px per side, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    c = x.shape[1]
    win = _gaussian_window(c, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(1, keepdim=True)


def ssim(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image SSIM of float images on [0, 1], over the region `weight` (see the module docstring)."""
    s = ssim_map(x, y)
    if weight is None:
        return masked_mean(s)
    _check_weight(weight, x)
    r = SSIM_WINDOW // 2
    return masked_mean(s, weight[..., r:-r, r:-r])


def lpips_distance(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS of float images on [0, 1] with an `lpips`/ST-LPIPS network (inputs rescaled to [-1, 1])."""
    _check_pair(x, y)
    with torch.no_grad():
        return net(x * 2 - 1, y * 2 - 1).flatten(1).mean(1).double()


def lpips_map(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The LPIPS network's spatial distance map (B, 1, H, W) for float images on [0, 1]."""
    _check_pair(x, y)
    if not hasattr(net, "spatial"):
        raise TypeError(f"{type(net).__name__} has no spatial mode; use an lpips or ST-LPIPS network")
    was = net.spatial
    net.spatial = True
    try:
        with torch.no_grad():
            return net(x * 2 - 1, y * 2 - 1).double()
    finally:
        net.spatial = was
