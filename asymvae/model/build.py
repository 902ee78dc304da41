"""Build the VAE to train: a new asymmetric decoder on a base VAE, or an existing model to fine-tune."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.errors import UserError
from asymvae.model.checkpointing import enable_gradient_checkpointing
from asymvae.model.config import ModelConfig
from asymvae.model.family import FAMILIES
from asymvae.model.hub import current_hub_id
from asymvae.model.latent_space import pipeline_config

log = logging.getLogger(__name__)

VAE = AsymmetricAutoencoderKL | AutoencoderKL

# Width multiplier and extra res layers per up block over the base decoder. On SD's decoder
# ([128, 256, 512, 512], 2 layers) these give the paper's x1.5 = [192, 384, 768, 768] with 3 layers
# and x2 = [256, 512, 1024, 1024] with 5 layers.
_DECODER_SCALE = {"base": (1.0, 0), "x1.5": (1.5, 1), "x2": (2.0, 3)}


class ModelSourceError(UserError, RuntimeError):
    """The pretrained weights named in the config cannot be found or read."""


HUB_HINT = (
    "If this is a hub id, asymvae needs network access to the hub (and HF_HUB_OFFLINE unset), "
    "or a local copy: download it once and set model.pretrained to the folder. A gated repo (SD3, SD3.5, "
    "FLUX.1 [dev]) also needs a token: accept the licence on its hub page, then set HF_TOKEN or run `hf auth login`."
)


def decoder_sizes(cfg: ModelConfig, base_channels: list[int], base_layers: int, groups: int) -> tuple[list[int], int]:
    """Up-block widths and res layers per up block of the asymmetric decoder for `cfg.decoder`."""
    if cfg.decoder == "custom":
        channels, layers = list(cfg.decoder_channels or []), int(cfg.decoder_layers or 0)
    else:
        scale, extra = _DECODER_SCALE[cfg.decoder]
        channels = [round(c * scale / groups) * groups for c in base_channels]
        layers = base_layers + extra
    if len(channels) != len(base_channels):
        raise ValueError(
            f"model.decoder_channels has {len(channels)} levels but the base VAE has {len(base_channels)}: "
            "the decoder must upsample the latent by the same factor the encoder downsampled it"
        )
    bad = [c for c in channels if c % groups]
    if bad:
        raise ValueError(f"model.decoder_channels {bad} are not multiples of the base's norm_num_groups={groups}")
    return channels, layers


def _resolve_location(pretrained: str, subfolder: str | None) -> tuple[str, str | None]:
    """Local folders may hold config.json directly; hub ids keep the subfolder."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        if subfolder and (path / subfolder / "config.json").is_file():
            return str(path), subfolder
        if (path / "config.json").is_file():
            return str(path), None
        raise ModelSourceError(
            f"{path} holds no diffusers VAE: expected {path / (subfolder or '')}/config.json. "
            "Point model.pretrained at a folder written by save_pretrained (or its parent, with model.subfolder)."
        )
    if pretrained.startswith(("/", "./", "../", "~")):
        raise ModelSourceError(f"model.pretrained folder {pretrained} does not exist")
    return current_hub_id(pretrained), subfolder


def pretrained_class(pretrained: str, subfolder: str | None) -> str:
    """The diffusers class name recorded in the model's config.json."""
    where, sub = _resolve_location(pretrained, subfolder)
    try:
        config = AutoencoderKL.load_config(where, subfolder=sub)
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise ModelSourceError(f"cannot read the VAE config of {where!r} (subfolder {sub!r}): {e}\n{HUB_HINT}") from e
    return str(config.get("_class_name", "AutoencoderKL"))


def _load(cls: type[VAE], pretrained: str, subfolder: str | None) -> VAE:
    where, sub = _resolve_location(pretrained, subfolder)
    try:
        return cls.from_pretrained(where, subfolder=sub)
    except Exception as e:
        raise ModelSourceError(f"cannot load {cls.__name__} from {pretrained!r} (subfolder {sub!r}): {e}") from e


def _copy_or_identity(target: torch.nn.Conv2d, source: torch.nn.Conv2d | None) -> None:
    """Copy `source` into the 1x1 conv `target`, or make `target` an exact identity where the base has none
    (SD3 and FLUX VAEs: `use_quant_conv=False`), so the asymmetric model computes what the base does."""
    if source is not None:
        target.load_state_dict(source.state_dict())
        return
    with torch.no_grad():
        target.weight.copy_(torch.eye(target.out_channels, target.in_channels).view_as(target.weight))
        target.bias.zero_()


def asymmetric_from_base(base: AutoencoderKL, cfg: ModelConfig) -> AsymmetricAutoencoderKL:
    """A new AsymmetricAutoencoderKL that shares `base`'s encoder, quant_conv and post_quant_conv.

    Any diffusers KL VAE works as the base (SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1): where it has no quant convs the
    new model's are exact identities, and the config values pipelines read (scaling and shift factor,
    force_upcast, latents mean/std) are recorded on the new model's config, so its config.json carries them.
    For `decoder=base` the base decoder's weights are copied too; the mask branch always starts fresh.
    """
    bc = base.config
    if not bc.get("mid_block_add_attention", True):
        raise ModelSourceError(
            "the base VAE has mid_block_add_attention=False, which AsymmetricAutoencoderKL cannot represent (its "
            "encoder and decoder always have mid-block attention); use a base VAE with mid-block attention"
        )
    channels, layers = decoder_sizes(cfg, list(bc.block_out_channels), bc.layers_per_block, bc.norm_num_groups)
    vae = AsymmetricAutoencoderKL(
        in_channels=bc.in_channels,
        out_channels=bc.out_channels,
        down_block_types=tuple(bc.down_block_types),
        down_block_out_channels=tuple(bc.block_out_channels),
        layers_per_down_block=bc.layers_per_block,
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        up_block_out_channels=tuple(channels),
        layers_per_up_block=layers,
        act_fn=bc.act_fn,
        latent_channels=bc.latent_channels,
        norm_num_groups=bc.norm_num_groups,
        sample_size=bc.sample_size,
        scaling_factor=bc.scaling_factor,
    )
    vae.register_to_config(**pipeline_config(bc))  # __init__ forgot them (see asymvae.model.latent_space)
    vae.encoder.load_state_dict(base.encoder.state_dict())
    _copy_or_identity(vae.quant_conv, base.quant_conv)
    _copy_or_identity(vae.post_quant_conv, base.post_quant_conv)
    if channels == list(bc.block_out_channels) and layers == bc.layers_per_block:
        result = vae.decoder.load_state_dict(base.decoder.state_dict(), strict=False)
        stray = [k for k in result.missing_keys if not k.startswith("condition_encoder.")]
        if stray or result.unexpected_keys:
            raise RuntimeError(
                f"base decoder weights did not map onto the asymmetric decoder: {stray + result.unexpected_keys}"
            )
        log.info("copied the base decoder's weights into the asymmetric decoder (mask branch starts fresh)")
    return vae


def scratch_autoencoderkl(cfg: ModelConfig) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL of the configured (usually tiny) size, with the latent interface of
    `cfg.scratch_family` when set."""
    n = len(cfg.scratch_channels)
    interface = FAMILIES[cfg.scratch_family].vae_kwargs() if cfg.scratch_family else {}
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.scratch_channels),
        layers_per_block=cfg.scratch_layers,
        norm_num_groups=cfg.norm_num_groups,
        **{"latent_channels": cfg.latent_channels, **interface},
    )


def build_vae(cfg: ModelConfig, pretrained: str | None = None) -> VAE:
    """The VAE to train, with `requires_grad` set on the parts that learn.

    `pretrained` replaces `cfg.pretrained` (used once a `preset:NAME` reference has been resolved to a folder).
    """
    source = pretrained or cfg.pretrained
    if source is None:
        vae: VAE = scratch_autoencoderkl(cfg)
    else:
        cls_name = pretrained_class(source, cfg.subfolder)
        if cfg.kind == "autoencoderkl":
            if cls_name != "AutoencoderKL":
                raise ModelSourceError(f"model.kind=autoencoderkl but {source} is a {cls_name}")
            vae = _load(AutoencoderKL, source, cfg.subfolder)
        elif cls_name == "AsymmetricAutoencoderKL":
            log.info("fine-tuning the AsymmetricAutoencoderKL %s as it is (model.decoder ignored)", source)
            vae = _load(AsymmetricAutoencoderKL, source, cfg.subfolder)
        elif cls_name == "AutoencoderKL":
            vae = asymmetric_from_base(_load(AutoencoderKL, source, cfg.subfolder), cfg)
        else:
            raise ModelSourceError(f"{source} is a {cls_name}, not an AutoencoderKL or AsymmetricAutoencoderKL")
    set_trainable(vae, cfg, from_scratch=source is None)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(vae.decoder)
    return vae


def set_trainable(vae: VAE, cfg: ModelConfig, from_scratch: bool = False) -> None:
    """Freeze what the method keeps fixed: the encoder and quant_conv (unless a plain VAE trains them).

    A plain VAE of the SD3/FLUX kind has no quant convs (they are None); there is nothing to set for them.
    """
    train_encoder = isinstance(vae, AutoencoderKL) and (cfg.train_encoder or from_scratch)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    if vae.post_quant_conv is not None:
        vae.post_quant_conv.requires_grad_(cfg.train_post_quant_conv or from_scratch)
    if train_encoder:
        vae.encoder.requires_grad_(True)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(True)


def encoder_trains(vae: torch.nn.Module) -> bool:
    """True when the encoder has trainable weights (then the KL term applies)."""
    return any(p.requires_grad for p in vae.encoder.parameters())
