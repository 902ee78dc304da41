"""Tiny random diffusers inpainting pipelines of every kind asymvae runs, built offline from hand-made parts.

Real diffusers pipeline classes with tiny random UNets/transformers, tiny CLIP and T5 text encoders, a CLIP
tokenizer from a hand-written vocab.json + merges.txt, and a T5 tokenizer from a hand-written Unigram vocabulary
(transformers 5 builds it without sentencepiece). All save with `save_pretrained` and load back offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from diffusers import (
    AsymmetricAutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxInpaintPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3InpaintPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLInpaintPipeline,
    UNet2DConditionModel,
)

from asymvae.model.build import asymmetric_from_base
from asymvae.model.config import ModelConfig
from tests.support.tiny_models import family_base

WORDS = ("a", "photo", "of", "cat", "dog")


def _loaded_like(pipe):
    """In eval mode, as `from_pretrained` leaves every model (freshly built ones train: T5's dropout would draw
    from the global RNG and make two runs with the same seed differ)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def family_vae(family: str, seed: int = 0) -> AsymmetricAutoencoderKL:
    """A tiny asymmetric VAE (base-size decoder, random mask branch) on a tiny random base of `family`'s shape."""
    return asymmetric_from_base(family_base(family, seed), ModelConfig(pretrained="unused", decoder="base")).eval()


def clip_tokenizer(folder: Path) -> transformers.CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{f"{w}</w>": i + 2 for i, w in enumerate(WORDS)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _clip_config() -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(WORDS) + 2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=32,
    )


def _t5() -> tuple[transformers.T5Tokenizer, transformers.T5EncoderModel]:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0) for w in WORDS]
    tokenizer = transformers.T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    config = transformers.T5Config(
        vocab_size=len(pieces),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return tokenizer, transformers.T5EncoderModel(config)


def _inpaint_unet(**extra) -> UNet2DConditionModel:
    """A tiny 9-channel inpainting UNet (latents + mask + masked-image latents), seeded."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=4,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **extra,
    )


def sd_pipeline(vae, folder: Path, **extra) -> StableDiffusionInpaintPipeline:
    """SD 1.x inpainting: 9-channel UNet (latents + mask + masked-image latents)."""
    unet = _inpaint_unet(cross_attention_dim=32)
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        unet=unet,
        text_encoder=transformers.CLIPTextModel(_clip_config()),
        tokenizer=clip_tokenizer(folder),
        scheduler=DDIMScheduler(steps_offset=1),
        **{"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False, **extra},
    )
    return _loaded_like(pipe)


def sdxl_pipeline(vae, folder: Path) -> StableDiffusionXLInpaintPipeline:
    """SDXL inpainting: two CLIP encoders (the second with projection), time-id embeddings, 9-channel UNet."""
    unet = _inpaint_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + the pooled projection
        cross_attention_dim=64,  # both encoders' hidden states side by side
    )
    tokenizer = clip_tokenizer(folder)
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        unet=unet,
        text_encoder=transformers.CLIPTextModel(_clip_config()),
        text_encoder_2=transformers.CLIPTextModelWithProjection(_clip_config()),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(),
        requires_aesthetics_score=False,
        add_watermarker=False,
    )
    return _loaded_like(pipe)


def sd3_pipeline(vae, folder: Path) -> StableDiffusion3InpaintPipeline:
    """SD3 inpainting: MMDiT transformer on 16-channel latents, two CLIP encoders and T5."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=4,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
    )
    tokenizer = clip_tokenizer(folder)
    t5_tokenizer, t5 = _t5()
    pipe = StableDiffusion3InpaintPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=transformers.CLIPTextModelWithProjection(_clip_config()),
        tokenizer=tokenizer,
        text_encoder_2=transformers.CLIPTextModelWithProjection(_clip_config()),
        tokenizer_2=tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )
    return _loaded_like(pipe)


def flux_pipeline(vae, folder: Path, cls: type = FluxInpaintPipeline):
    """FLUX.1 (`FluxPipeline`, `FluxInpaintPipeline` or `FluxFillPipeline`): transformer on packed 2x2 patches;
    the fill transformer also takes the packed masked-image latents and the mask (64 = 8x8 px per latent px)."""
    torch.manual_seed(0)
    packed = 4 * vae.config.latent_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    extra = packed + 4 * factor * factor if cls is FluxFillPipeline else 0
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=packed + extra,
        out_channels=packed,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    t5_tokenizer, t5 = _t5()
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=transformers.CLIPTextModel(_clip_config()),
        tokenizer=clip_tokenizer(folder),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    return _loaded_like(pipe)


BUILDERS = {
    "StableDiffusionInpaintPipeline": ("sd", sd_pipeline),
    "StableDiffusionXLInpaintPipeline": ("sdxl", sdxl_pipeline),
    "StableDiffusion3InpaintPipeline": ("sd3", sd3_pipeline),
    "FluxInpaintPipeline": ("flux", flux_pipeline),
    "FluxFillPipeline": ("flux", lambda vae, folder: flux_pipeline(vae, folder, FluxFillPipeline)),
}
"""Pipeline class -> (VAE family, builder(vae, folder))."""
