"""Configuration of the VAE being trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from asymvae.model.family import FAMILIES

Kind = Literal["asymmetric", "autoencoderkl"]
KINDS = get_args(Kind)
DecoderPreset = Literal["base", "x1.5", "x2", "custom"]
DECODER_PRESETS = get_args(DecoderPreset)


@dataclass
class ModelConfig:
    """Which VAE is trained, where its weights come from, and which parts learn."""

    kind: Kind = "asymmetric"
    """`asymmetric`: an AsymmetricAutoencoderKL (mask-conditioned decoder); `autoencoderkl`: a plain VAE."""
    pretrained: str | None = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    """Hub id or local diffusers folder. For `asymmetric` either a base AutoencoderKL (a new asymmetric
    decoder is built on its encoder) or an AsymmetricAutoencoderKL (fine-tuned as it is); the folder's
    config.json tells which. `preset:NAME` means the export of preset NAME, trained first if missing.
    Null: a fresh AutoencoderKL of the `scratch_*` sizes (kind `autoencoderkl` only)."""
    subfolder: str | None = "vae"
    """Subfolder of `pretrained` holding the VAE (skipped for a local folder that has config.json itself)."""
    decoder: DecoderPreset = "x1.5"
    """Asymmetric decoder size when built from a base VAE: `base` (the base decoder's widths, weights
    copied), `x1.5` and `x2` (the paper's heavier decoders: 1.5x/2x widths, +1/+3 res layers per up
    block), or `custom` (`decoder_channels`, `decoder_layers`)."""
    decoder_channels: list[int] | None = None
    """Up-block widths for `decoder=custom`, e.g. [192, 384, 768, 768]."""
    decoder_layers: int | None = None
    """Res layers per up block for `decoder=custom` (diffusers' `layers_per_up_block`)."""
    scratch_channels: list[int] = (64, 128)  # type: ignore[assignment]
    """Block widths of a VAE built from scratch (no `pretrained`)."""
    scratch_layers: int = 1
    """Res layers per block of a VAE built from scratch."""
    latent_channels: int = 4
    """Latent channels of a VAE built from scratch (`scratch_family` sets them instead)."""
    scratch_family: str | None = None
    """Give a VAE built from scratch a released family's latent interface: its latent channels, quant convs
    (or none), scaling and shift factor and force_upcast. One of `sd`, `sdxl`, `sd3`, `flux`; null: SD's
    interface with `latent_channels`."""
    norm_num_groups: int = 32
    """GroupNorm groups of a VAE built from scratch (a built decoder keeps its base's value)."""
    train_post_quant_conv: bool = False
    """Train post_quant_conv too (the paper keeps it frozen with the encoder)."""
    train_encoder: bool = False
    """`autoencoderkl` only: train the encoder and quant_conv too (adds the KL term). Always on from scratch."""
    sample_posterior: bool = True
    """Decode a sample of the encoder's posterior (True, as the official recipe) or its mode."""
    gradient_checkpointing: bool = False
    """Recompute decoder activations in backward: less memory, about a third more compute."""

    def __post_init__(self) -> None:
        self.scratch_channels = list(self.scratch_channels)
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.decoder not in DECODER_PRESETS:
            raise ValueError(f"model.decoder must be one of {DECODER_PRESETS}, got {self.decoder!r}")
        if self.scratch_family is not None and self.scratch_family not in FAMILIES:
            known = ", ".join(FAMILIES)
            raise ValueError(f"model.scratch_family must be one of {known} or null, got {self.scratch_family!r}")
        if self.decoder == "custom" and (not self.decoder_channels or not self.decoder_layers):
            raise ValueError("model.decoder=custom needs model.decoder_channels and model.decoder_layers")
        if self.kind == "asymmetric" and not self.pretrained:
            raise ValueError(
                "model.kind=asymmetric needs model.pretrained: a base AutoencoderKL whose frozen encoder the "
                "new decoder learns to invert (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5 with subfolder vae)"
            )
