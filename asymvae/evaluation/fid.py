"""Optional FID between decoded and original images, computed only when its Inception weights are at hand.

FID uses the TensorFlow Inception graph ported by `pytorch-fid` (`pt_inception-2015-12-05-6726825d.pth`);
torchvision's ImageNet Inception is a different network and gives different numbers, so it is not
substituted. When the package or its weights are missing, `fid_unavailable()` says why and how to fix it,
and evaluation reports FID as not computed. With fewer than a few thousand images FID is strongly biased
upwards: compare models on the same image set only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["FID_WEIGHTS_FILE", "FeatureStats", "fid_unavailable", "frechet_distance", "inception_features"]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def fid_unavailable() -> str | None:
    """None when FID can be computed here; otherwise the reason and the fix, in one message."""
    try:
        import pytorch_fid  # noqa: F401
    except ImportError:
        return (
            "FID not computed: the pytorch-fid package is not installed. Fix: pip install pytorch-fid, and "
            f"put its Inception weights at {_weights_path()} (downloaded on first use where there is network)."
        )
    if not _weights_path().is_file():
        return (
            f"FID not computed: the FID Inception weights are not at {_weights_path()} and cannot be downloaded "
            f"here. Fix: download {FID_WEIGHTS_FILE} from pytorch-fid's releases once and copy it there (or set "
            "TORCH_HOME to a folder holding hub/checkpoints/ with it)."
        )
    return None


def inception_features(device: torch.device) -> nn.Module:
    """pytorch-fid's Inception (2048-d pool features), on `device`; call only when `fid_unavailable()` is None."""
    from pytorch_fid.inception import InceptionV3

    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()


class FeatureStats:
    """Running sums for the mean and covariance of feature vectors (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, features: torch.Tensor) -> None:
        """Add a (N, D) batch of features."""
        f = features.detach().double().cpu().numpy().reshape(features.shape[0], -1)
        if self.total is None:
            self.total = np.zeros(f.shape[1])
            self.outer = np.zeros((f.shape[1], f.shape[1]))
        self.n += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance of everything added (needs at least 2 vectors)."""
        if self.n < 2 or self.total is None or self.outer is None:
            raise ValueError(f"FID needs at least 2 images, got {self.n}")
        mu = self.total / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2): |mu1-mu2|² + tr(C1 + C2 - 2 (C1 C2)^½)."""
    from scipy import linalg

    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # Near-singular product (few images): regularise as pytorch-fid does.
        offset = np.eye(cov1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
