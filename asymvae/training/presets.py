"""Named experiment presets: plain functions returning a config; a new preset edits an old one."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asymvae.config import ConfigError, apply_overrides, load_yaml
from asymvae.data.config import DataConfig
from asymvae.losses.config import GANConfig, LossConfig, LPIPSConfig
from asymvae.masks import MaskConfig
from asymvae.model.config import ModelConfig
from asymvae.model.hub import FLUX_DEV, FLUX_SCHNELL, SD3, SD15, SD35, SDXL
from asymvae.training.config import OptimConfig, TrainConfig
from asymvae.training.experiment import ExperimentConfig

PRESETS: dict[str, Callable[[], ExperimentConfig]] = {}


def preset(fn: Callable[[], ExperimentConfig]) -> Callable[[], ExperimentConfig]:
    """Register `fn` under its name; its docstring's first line is the description `asymvae configs` shows."""
    PRESETS[fn.__name__] = fn
    return fn


def get_preset(name: str) -> ExperimentConfig:
    """A fresh config for preset `name`."""
    if name not in PRESETS:
        raise ConfigError(f"no preset {name!r}.{_closest_presets(name)} `asymvae configs` lists all {len(PRESETS)}")
    return PRESETS[name]()


def _closest_presets(name: str) -> str:
    close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def load_experiment(name_or_path: str, overrides: list[str] | dict[str, Any] | None = None) -> ExperimentConfig:
    """A preset name or a YAML file, with overrides applied: `section.field=value` strings or the command
    line's {dotted key: value} (see `asymvae.config.apply_overrides`)."""
    path = Path(name_or_path)
    if name_or_path in PRESETS:
        cfg = get_preset(name_or_path)
    elif path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        cfg = load_yaml(ExperimentConfig, path)
    else:
        raise ConfigError(
            f"{name_or_path!r} is neither a preset nor a YAML file.{_closest_presets(name_or_path)} "
            f"`asymvae configs` lists all {len(PRESETS)} presets"
        )
    return apply_overrides(cfg, overrides or {})


def describe(name: str) -> str:
    """One-line description of a preset."""
    return (PRESETS[name].__doc__ or "").strip().splitlines()[0]


POKEMON = "diffusers/pokemon-gpt4-captions"


@preset
def asymmetric_autoencoderkl_sdv15_pokemon() -> ExperimentConfig:
    """x1.5 asymmetric decoder on SD 1.5's frozen encoder, Pokemon images at 512², the paper's loss recipe."""
    return ExperimentConfig(
        name="asymmetric_autoencoderkl_sdv15_pokemon",
        model=ModelConfig(kind="asymmetric", pretrained=SD15, subfolder="vae", decoder="x1.5"),
        data=DataConfig(source=POKEMON, resolution=512, crop="random_scale", crop_scale_min=0.5, num_workers=4),
        masks=MaskConfig(full_mask_prob=0.5),
        # Official: L1 + 1.0 LPIPS(vgg); PatchGAN hinge from step 50,001 at 0.8 x adaptive weight.
        loss=LossConfig(
            pixel="l1", lpips=LPIPSConfig(weight=1.0, net="vgg"), gan=GANConfig(weight=0.8, start_step=50_001)
        ),
        # Official: Adam(0.5, 0.9), lr 4.5e-6 x global batch, 5k warm-up then cosine to 1e-6.
        optim=OptimConfig(
            lr=4.5e-6, scale_lr=True, betas=(0.5, 0.9), warmup_steps=5000, schedule="cosine", min_lr=1e-6
        ),
        train=TrainConfig(
            max_steps=60_000,
            batch_size=4,
            mixed_precision="bf16",
            checkpoint_every=2000,
            log_every=50,
            ema=False,
        ),
    )


@preset
def asymmetric_autoencoderkl_x2_pokemon_finetune() -> ExperimentConfig:
    """The reference engine's recipe: fine-tune the released x2 asymmetric VAE on Pokemon, L2 + 0.1 LPIPS(alex)."""
    cfg = asymmetric_autoencoderkl_sdv15_pokemon()
    return dataclasses.replace(
        cfg,
        name="asymmetric_autoencoderkl_x2_pokemon_finetune",
        model=ModelConfig(
            kind="asymmetric", pretrained="cross-attention/asymmetric-autoencoder-kl-x-2", subfolder=None
        ),
        masks=MaskConfig(full_mask_prob=0.1),
        loss=LossConfig(pixel="l2", lpips=LPIPSConfig(weight=0.1, net="alex")),
        optim=OptimConfig(lr=1e-5, betas=(0.9, 0.999), schedule="constant", max_grad_norm=1.0),
        train=TrainConfig(max_steps=20_850, batch_size=2, mixed_precision="bf16", checkpoint_every=2000, log_every=50),
    )


@preset
def autoencoderkl_sdv15_pokemon() -> ExperimentConfig:
    """Fine-tune SD 1.5's plain AutoencoderKL decoder on Pokemon (the reference engine's other config)."""
    cfg = asymmetric_autoencoderkl_x2_pokemon_finetune()
    return dataclasses.replace(
        cfg,
        name="autoencoderkl_sdv15_pokemon",
        model=ModelConfig(kind="autoencoderkl", pretrained=SD15, subfolder="vae"),
    )


# The demo: offline, CPU, minutes. Both stages use ST-LPIPS, whose weights ship inside a package.
_DEMO_DATA = DataConfig(source="builtin:demo", resolution=64, crop="random_scale", crop_scale_min=0.6, num_workers=0)


@preset
def demo_base() -> ExperimentConfig:
    """Stage 1 of the demo: fit a tiny plain AutoencoderKL from scratch on the built-in photos (CPU, ~2 min)."""
    return ExperimentConfig(
        name="demo_base",
        # Four levels (8x downsampling) as in SD: the mask branch of AsymmetricAutoencoderKL assumes it.
        model=ModelConfig(
            kind="autoencoderkl",
            pretrained=None,
            scratch_channels=[32, 32, 64, 64],
            scratch_layers=1,
            norm_num_groups=8,
        ),
        data=_DEMO_DATA,
        loss=LossConfig(pixel="l1", lpips=LPIPSConfig(weight=0.0), kl_weight=1e-6),
        optim=OptimConfig(lr=2e-3, betas=(0.9, 0.99), warmup_steps=20, schedule="cosine", min_lr=1e-4),
        train=TrainConfig(max_steps=600, batch_size=8, mixed_precision="no", checkpoint_every=100, log_every=10),
    )


@preset
def demo() -> ExperimentConfig:
    """Stage 2 of the demo: an x1.5 asymmetric decoder on demo_base's frozen encoder (trains demo_base first)."""
    return ExperimentConfig(
        name="demo",
        model=ModelConfig(kind="asymmetric", pretrained="preset:demo_base", decoder="x1.5"),
        data=_DEMO_DATA,
        masks=MaskConfig(full_mask_prob=0.5),
        loss=LossConfig(pixel="l1", lpips=LPIPSConfig(weight=0.1, net="alex", variant="shift_tolerant")),
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.99), warmup_steps=20, schedule="cosine", min_lr=5e-5),
        train=TrainConfig(max_steps=400, batch_size=8, mixed_precision="no", checkpoint_every=100, log_every=10),
    )


# ---------------------------------------------------------------------------------------------------------------
# VAE families beyond SD 1.x: docs/families/README.md. Each hub preset is the SD 1.5 recipe on that family's
# VAE (`vae` subfolder of the repo). Gated repos need a token of an account that accepted the licence on the
# model page: set HF_TOKEN, or run `hf auth login` once. Each demo pair is `demo_base`/`demo` with a tiny base
# of that family's latent interface (model.scratch_family), offline on the CPU.


def _on_family_vae(name: str, repo: str) -> ExperimentConfig:
    cfg = asymmetric_autoencoderkl_sdv15_pokemon()
    return dataclasses.replace(cfg, name=name, model=dataclasses.replace(cfg.model, pretrained=repo, subfolder="vae"))


@preset
def asymmetric_autoencoderkl_sdxl_pokemon() -> ExperimentConfig:
    """x1.5 asymmetric decoder on SDXL's VAE (stabilityai/stable-diffusion-xl-base-1.0), the SD 1.5 recipe."""
    return _on_family_vae("asymmetric_autoencoderkl_sdxl_pokemon", SDXL)


@preset
def asymmetric_autoencoderkl_sd3_pokemon() -> ExperimentConfig:
    """x1.5 decoder on SD3's VAE (stabilityai/stable-diffusion-3-medium-diffusers; gated: set HF_TOKEN)."""
    return _on_family_vae("asymmetric_autoencoderkl_sd3_pokemon", SD3)


@preset
def asymmetric_autoencoderkl_sd35_pokemon() -> ExperimentConfig:
    """x1.5 decoder on SD3.5's VAE (stabilityai/stable-diffusion-3.5-large; gated: set HF_TOKEN)."""
    return _on_family_vae("asymmetric_autoencoderkl_sd35_pokemon", SD35)


@preset
def asymmetric_autoencoderkl_flux_pokemon() -> ExperimentConfig:
    """x1.5 decoder on FLUX.1 [dev]'s VAE (black-forest-labs/FLUX.1-dev; gated: set HF_TOKEN)."""
    return _on_family_vae("asymmetric_autoencoderkl_flux_pokemon", FLUX_DEV)


@preset
def asymmetric_autoencoderkl_flux_schnell_pokemon() -> ExperimentConfig:
    """x1.5 decoder on FLUX.1 [schnell]'s VAE (black-forest-labs/FLUX.1-schnell, open), the SD 1.5 recipe."""
    return _on_family_vae("asymmetric_autoencoderkl_flux_schnell_pokemon", FLUX_SCHNELL)


def _demo_base_of(family: str) -> ExperimentConfig:
    cfg = demo_base()
    model = dataclasses.replace(cfg.model, scratch_family=family)
    return dataclasses.replace(cfg, name=f"demo_base_{family}", model=model)


def _demo_of(family: str) -> ExperimentConfig:
    cfg = demo()
    model = dataclasses.replace(cfg.model, pretrained=f"preset:demo_base_{family}")
    return dataclasses.replace(cfg, name=f"demo_{family}", model=model)


@preset
def demo_base_sdxl() -> ExperimentConfig:
    """demo_base with SDXL's latent interface (4 channels, scaling 0.13025): the SDXL demo's stand-in base."""
    return _demo_base_of("sdxl")


@preset
def demo_sdxl() -> ExperimentConfig:
    """demo on demo_base_sdxl's frozen encoder (trains demo_base_sdxl first)."""
    return _demo_of("sdxl")


@preset
def demo_base_sd3() -> ExperimentConfig:
    """demo_base with SD3's latent interface (16 channels, no quant convs, scaling 1.5305, shift 0.0609)."""
    return _demo_base_of("sd3")


@preset
def demo_sd3() -> ExperimentConfig:
    """demo on demo_base_sd3's frozen encoder (trains demo_base_sd3 first)."""
    return _demo_of("sd3")


@preset
def demo_base_flux() -> ExperimentConfig:
    """demo_base with FLUX.1's latent interface (16 channels, no quant convs, scaling 0.3611, shift 0.1159)."""
    return _demo_base_of("flux")


@preset
def demo_flux() -> ExperimentConfig:
    """demo on demo_base_flux's frozen encoder (trains demo_base_flux first)."""
    return _demo_of("flux")
