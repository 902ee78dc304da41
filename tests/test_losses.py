"""Losses: LPIPS loads for real or fails clearly; hinge and adaptive weight match hand computations."""

from __future__ import annotations

import pytest
import torch

from asymvae.losses.config import GANConfig, LossConfig, LPIPSConfig
from asymvae.losses.discriminator import PatchDiscriminator, adaptive_weight, hinge_d_loss
from asymvae.losses.objective import Objective
from asymvae.losses.perceptual import LPIPSWeightsError, build_lpips


def test_lpips_off_loads_nothing():
    assert build_lpips(LPIPSConfig(weight=0.0)) is None


def test_standard_lpips_without_backbone_weights_says_how_to_fix(tmp_path, monkeypatch):
    # An empty TORCH_HOME and no network: torchvision cannot fetch the VGG weights.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSWeightsError) as err:
        build_lpips(LPIPSConfig(net="vgg", variant="standard"))
    text = str(err.value)
    assert "vgg16-397923af.pth" in text
    assert str(tmp_path) in text
    assert "--loss.lpips.variant shift_tolerant" in text and "--loss.lpips.weight 0" in text


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_shift_tolerant_lpips_is_a_real_metric(net):
    lpips = build_lpips(LPIPSConfig(net=net, variant="shift_tolerant"))
    assert not any(p.requires_grad for p in lpips.parameters())
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    same = lpips(x, x).flatten()
    slightly = lpips(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)).flatten()
    very = lpips(x, -x).flatten()
    assert torch.all(same.abs() < 1e-6)
    assert torch.all(slightly > 0) and torch.all(very > slightly)


def test_hinge_loss_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r): 0, 0.5, 2   -> mean 0.8333
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f): 0, 1, 2     -> mean 1.0
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = (3.0 * w).sum()  # grad (3, 3): norm 3*sqrt(2)
    adv = (w * w).sum()  # grad (2, 4): norm sqrt(20)
    got = adaptive_weight(rec, adv, w, max_weight=1e4)
    assert got.item() == pytest.approx(3 * 2**0.5 / (20**0.5 + 1e-4), rel=1e-6)
    assert adaptive_weight(rec, 1e-12 * adv, w, max_weight=5.0).item() == 5.0


def test_patch_discriminator_shapes():
    disc = PatchDiscriminator(3, 16, 3)
    assert disc(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_objective_terms_and_gan_branch():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    layer = torch.nn.Conv2d(3, 3, 3, padding=1)
    rec = layer(target)
    cfg = LossConfig(pixel="l2", lpips=LPIPSConfig(weight=0.0), gan=GANConfig(weight=0.8, start_step=0))
    objective = Objective(cfg, None)
    loss, terms = objective.generator(rec, target, None, None, None)
    assert loss.item() == pytest.approx(torch.mean((rec - target) ** 2).item())
    assert set(terms) == {"l2", "loss"}
    disc = PatchDiscriminator(3, 8, 2).requires_grad_(False)
    loss_gan, terms = objective.generator(rec, target, torch.tensor(2.0), disc, layer.weight)
    assert {"g_adv", "d_weight", "kl"} <= set(terms)
    expected = terms["l2"] + 1e-6 * 2.0 + 0.8 * terms["d_weight"] * terms["g_adv"]
    assert loss_gan.item() == pytest.approx(expected.item(), rel=1e-5)
    d_loss, d_terms = Objective.discriminator(disc.requires_grad_(True), rec, target)
    assert d_loss.requires_grad and d_terms["d_loss"] >= 0


def test_objective_terms_are_copies_not_views_of_the_loss():
    """Under CUDA graphs the compiled loss lives in memory the next step's replay overwrites (it broke the
    CUDA-graph run on an H200); the terms the trainer keeps must own their storage."""
    target = torch.rand(1, 3, 8, 8)
    rec = target.clone().requires_grad_(True)
    objective = Objective(LossConfig(pixel="l2", lpips=LPIPSConfig(weight=0.0)), None)
    kl = torch.tensor(0.5)
    loss, terms = objective.generator(rec, target, None, None, None)
    assert terms["loss"].untyped_storage().data_ptr() != loss.untyped_storage().data_ptr()
    _, terms = objective.generator(rec, target, kl, None, None)
    assert terms["kl"].untyped_storage().data_ptr() != kl.untyped_storage().data_ptr()
