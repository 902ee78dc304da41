"""Configuration of the training objective."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

LPIPSNet = Literal["vgg", "alex"]
LPIPS_NETS = get_args(LPIPSNet)
LPIPSVariant = Literal["standard", "shift_tolerant"]
LPIPS_VARIANTS = get_args(LPIPSVariant)


@dataclass
class LPIPSConfig:
    """The perceptual term."""

    weight: float = 1.0
    """Weight of LPIPS in the reconstruction loss; 0 turns it off (and loads no backbone)."""
    net: LPIPSNet = "vgg"
    """Backbone: `vgg` (the paper's) or `alex` (cheaper; the reference engine's)."""
    variant: LPIPSVariant = "standard"
    """`standard`: the lpips package; needs torchvision's ImageNet backbone weights in TORCH_HOME (downloaded
    once, or baked into the image). `shift_tolerant`: ST-LPIPS (stlpips-pytorch), whose complete weights ship
    inside the package, so it works offline; a different, published perceptual metric."""

    def __post_init__(self) -> None:
        if self.net not in LPIPS_NETS:
            raise ValueError(f"loss.lpips.net must be one of {LPIPS_NETS}, got {self.net!r}")
        if self.variant not in LPIPS_VARIANTS:
            raise ValueError(f"loss.lpips.variant must be one of {LPIPS_VARIANTS}, got {self.variant!r}")
        if self.weight < 0:
            raise ValueError(f"loss.lpips.weight must be >= 0, got {self.weight}")


@dataclass
class GANConfig:
    """The PatchGAN discriminator (taming-transformers' NLayerDiscriminator, hinge loss)."""

    weight: float = 0.8
    """disc_weight: multiplies the adaptive weight of the generator's adversarial term; 0 turns the GAN off."""
    start_step: int = 50_001
    """Optimizer step at which the discriminator and the adversarial term switch on (official: 50,001)."""
    layers: int = 3
    """Strided conv layers of the discriminator."""
    channels: int = 64
    """Width of the discriminator's first layer."""
    adaptive_weight_max: float = 1e4
    """Clamp of the adaptive weight ||grad rec|| / ||grad adv|| at the decoder's last layer."""

    @property
    def enabled(self) -> bool:
        """True when the adversarial part takes part at all."""
        return self.weight > 0


@dataclass
class LossConfig:
    """Reconstruction loss = pixel + LPIPS (+ adaptive-weighted adversarial, + KL when the encoder trains)."""

    pixel: Literal["l1", "l2"] = "l1"
    """`l1` (official) or `l2` (the reference engine's)."""
    pixel_weight: float = 1.0
    """Weight of the pixel term."""
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    gan: GANConfig = field(default_factory=lambda: GANConfig(weight=0.0))
    kl_weight: float = 1e-6
    """Weight of the KL term; used only when the encoder trains (plain VAEs, from scratch)."""

    def __post_init__(self) -> None:
        if self.pixel not in ("l1", "l2"):
            raise ValueError(f"loss.pixel must be l1 or l2, got {self.pixel!r}")
