"""The training objective: reconstruction terms, the adversarial term and the discriminator's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asymvae.losses.config import LossConfig
from asymvae.losses.discriminator import adaptive_weight, hinge_d_loss


class Objective:
    """Computes the loss terms; returns them as detached copies so logging needs no per-step host sync.

    Copies, not views: with CUDA graphs (`train.compile_mode=reduce-overhead`) a compiled function's outputs
    live in memory its next replay overwrites, and the trainer reads the terms after later steps have run."""

    def __init__(self, cfg: LossConfig, lpips: nn.Module | None) -> None:
        self.cfg = cfg
        self.lpips = lpips
        self._terms = self._reconstruction_terms

    def compile(self, mode: str | None = None) -> None:
        """torch.compile the reconstruction terms (pixel + LPIPS) with static shapes."""
        self._terms = torch.compile(self._reconstruction_terms, dynamic=False, mode=mode)

    def _reconstruction_terms(
        self, rec: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # No .detach() in here: in torch 2.14 a compiled function that returns both `w * x` and
        # `x.detach()` returns the first without its grad_fn. The caller detaches.
        rec32 = rec.float()
        pixel = F.l1_loss(rec32, target) if self.cfg.pixel == "l1" else F.mse_loss(rec32, target)
        loss = self.cfg.pixel_weight * pixel
        terms = {self.cfg.pixel: pixel}
        if self.lpips is not None:
            perceptual = self.lpips(rec, target).mean().float()
            loss = loss + self.cfg.lpips.weight * perceptual
            terms["lpips"] = perceptual
        return loss, terms

    def reconstruction(self, rec: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pixel + LPIPS loss, computed in float32 whatever the autocast precision; terms detached."""
        loss, terms = self._terms(rec, target)
        return loss, {k: v.detach().clone() for k, v in terms.items()}

    def generator(
        self,
        rec: torch.Tensor,
        target: torch.Tensor,
        kl: torch.Tensor | None,
        disc: nn.Module | None,
        last_layer: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss the VAE minimises. `disc` is given only once the GAN phase has started."""
        loss, terms = self.reconstruction(rec, target)
        if kl is not None:
            loss = loss + self.cfg.kl_weight * kl
            terms["kl"] = kl.detach().clone()  # kl may be a compiled (CUDA-graph) output too
        if disc is not None and last_layer is not None:
            g_loss = -disc(rec).float().mean()
            weight = adaptive_weight(loss, g_loss, last_layer, self.cfg.gan.adaptive_weight_max)
            loss = loss + self.cfg.gan.weight * weight * g_loss
            terms["g_adv"] = g_loss.detach()
            terms["d_weight"] = weight
        terms["loss"] = loss.detach().clone()  # without KL or GAN terms, `loss` is the compiled output itself
        return loss, terms

    @staticmethod
    def discriminator(
        disc: nn.Module, rec: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss of the discriminator on real images and detached reconstructions."""
        logits_real = disc(target.detach()).float()
        logits_fake = disc(rec.detach()).float()
        loss = hinge_d_loss(logits_real, logits_fake)
        return loss, {"d_loss": loss.detach(), "logits_real": logits_real.mean().detach()}
