"""The module that training wraps in DDP: image (+ mask) in, reconstruction out."""

from __future__ import annotations

import torch
from diffusers import AsymmetricAutoencoderKL
from torch import nn

from asymvae.model.build import VAE, encoder_trains


class Reconstructor(nn.Module):
    """Encode (without gradients when the encoder is frozen) and decode, conditioning on the mask.

    Only `forward` goes through DDP, so everything that learns must run inside it.
    """

    def __init__(self, vae: VAE, sample_posterior: bool = True) -> None:
        super().__init__()
        self.vae = vae
        self.sample_posterior = sample_posterior
        self.asymmetric = isinstance(vae, AsymmetricAutoencoderKL)
        self.trains_encoder = encoder_trains(vae)  # fixed once built; checked here, not every step

    def forward(
        self, pixels: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the reconstruction in [-1, 1] (roughly) and the KL term (None when the encoder is frozen).

        `pixels` is (B, 3, H, W) in [-1, 1]; `mask` is (B, 1, H, W), 1 = hole, ignored by a plain VAE.
        """
        trains_encoder = self.trains_encoder
        with torch.set_grad_enabled(trains_encoder and torch.is_grad_enabled()):
            posterior = self.vae.encode(pixels).latent_dist
            z = posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()
        # diffusers' decode takes image and mask by keyword only; a plain VAE has no mask branch.
        rec = self.vae.decode(z, image=pixels, mask=mask).sample if self.asymmetric else self.vae.decode(z).sample
        kl = posterior.kl().mean() if trains_encoder else None
        return rec, kl

    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight, where the adversarial weight is balanced (taming's recipe)."""
        return self.vae.decoder.conv_out.weight
