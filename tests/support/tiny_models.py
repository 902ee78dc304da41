"""Tiny models and configs that train in seconds on a 2-core CPU, fully offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asymvae.config import apply_overrides
from asymvae.data.config import DataConfig
from asymvae.losses.config import LossConfig, LPIPSConfig
from asymvae.masks import MaskConfig
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig
from asymvae.training.experiment import ExperimentConfig

if TYPE_CHECKING:
    import torch

# Four levels (8x), as SD: AsymmetricAutoencoderKL's mask branch assumes that depth.
TINY_BASE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
)


def make_base_vae(seed: int = 0):
    """A tiny random AutoencoderKL."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_BASE)


def family_base(name: str, seed: int = 0, **extra):
    """A tiny random AutoencoderKL with the latent interface of VAE family `name` (sd, sdxl, sd3, flux)."""
    import torch
    from diffusers import AutoencoderKL

    from asymvae.model.family import FAMILIES

    torch.manual_seed(seed)
    return AutoencoderKL(**{**TINY_BASE, **FAMILIES[name].vae_kwargs(), **extra})


def tiny_config(base_vae_dir: Path, output: Path, *overrides: str) -> ExperimentConfig:
    """An asymmetric run on the demo photos at 32², batch 2, no LPIPS: a step takes ~0.1 s."""
    cfg = ExperimentConfig(
        name="tiny",
        model=ModelConfig(kind="asymmetric", pretrained=str(base_vae_dir), decoder="base"),
        data=DataConfig(source="builtin:demo", resolution=32, num_workers=0, max_samples=16),
        masks=MaskConfig(full_mask_prob=0.5),
        loss=LossConfig(pixel="l1", lpips=LPIPSConfig(weight=0.0)),
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        train=TrainConfig(
            max_steps=4,
            batch_size=2,
            mixed_precision="no",
            checkpoint_every=2,
            log_every=1,
            output_dir=str(output),
            progress=False,
        ),
    )
    return apply_overrides(cfg, list(overrides))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of the exported VAE in `folder/vae` (asymmetric or plain, as its config says)."""
    from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

    cls = AsymmetricAutoencoderKL if "Asymmetric" in (folder / "vae" / "config.json").read_text() else AutoencoderKL
    return cls.from_pretrained(folder, subfolder="vae").state_dict()
