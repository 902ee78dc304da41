"""The module that training wraps in DDP: image (+ mask) in, reconstruction out."""

from __future__ import annotations

import torch
from diffusers import AsymmetricAutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from asymvae.model.build import VAE, encoder_trains


class Reconstructor(nn.Module):
    """Encode (without gradients when the encoder is frozen) and decode, conditioning on the mask.

    Only `forward` goes through DDP, so everything that learns must run inside it. With a frozen
    encoder the caller may encode outside (`encode_frozen`) and pass the latents in: then `forward`
    is the decoder alone, a graph of static shapes that torch.compile handles whole.
    """

    def __init__(self, vae: VAE, sample_posterior: bool = True) -> None:
        super().__init__()
        self.vae = vae
        self.sample_posterior = sample_posterior
        self.asymmetric = isinstance(vae, AsymmetricAutoencoderKL)
        self.trains_encoder = encoder_trains(vae)  # fixed once built; checked here, not every step

    def moments(self, pixels: torch.Tensor) -> torch.Tensor:
        """The posterior's mean and log-variance, stacked on channels (what `vae.encode` wraps)."""
        h = self.vae.encoder(pixels)
        quant_conv = getattr(self.vae, "quant_conv", None)
        return quant_conv(h) if quant_conv is not None else h

    def latents(self, moments: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A posterior sample (or its mode) from `moments`, drawn from `generator` alone."""
        posterior = DiagonalGaussianDistribution(moments)
        return posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()

    def forward(
        self,
        pixels: torch.Tensor,
        mask: torch.Tensor | None,
        latents: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the reconstruction in [-1, 1] (roughly) and the KL term (None when the encoder is frozen).

        `pixels` is (B, 3, H, W) in [-1, 1]; `mask` is (B, 1, H, W), 1 = hole, ignored by a plain VAE.
        `latents`, when given, are decoded as they are (the encoder must then be frozen).
        """
        kl = None
        if latents is None:
            with torch.set_grad_enabled(self.trains_encoder and torch.is_grad_enabled()):
                moments = self.moments(pixels)
                latents = self.latents(moments, generator)
            if self.trains_encoder:
                kl = DiagonalGaussianDistribution(moments).kl().mean()
        elif self.trains_encoder:
            raise ValueError("latents were given but the encoder trains: it must run inside forward()")
        return self._decode(latents, pixels, mask), kl

    def _decode(self, latents: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # diffusers' decode takes image and mask by keyword only; a plain VAE has no mask branch.
        if self.asymmetric:
            return self.vae.decode(latents, image=pixels, mask=mask).sample
        return self.vae.decode(latents).sample

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The deterministic reconstruction (the posterior's mode), without gradients, drawing no random
        numbers: for validation images during training."""
        return self._decode(DiagonalGaussianDistribution(self.moments(pixels)).mode(), pixels, mask)

    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight, where the adversarial weight is balanced (taming's recipe)."""
        return self.vae.decoder.conv_out.weight
