"""The exported VAE drops into diffusers' StableDiffusionInpaintPipeline (tiny random components, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (
    AsymmetricAutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from asymvae.training.run import train
from tests.conftest import tiny_config

transformers = pytest.importorskip("transformers", reason="transformers builds the tiny text encoder")


def tiny_pipeline(vae, tmp_path) -> StableDiffusionInpaintPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=4,
        in_channels=9,  # latents + mask + masked-image latents
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "photo</w>": 3, "of</w>": 4, "cat</w>": 5}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77
    )
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    return StableDiffusionInpaintPipeline(
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def test_exported_vae_runs_inside_the_inpaint_pipeline(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(base_vae_dir, out, "train.max_steps=2"))
    vae = AsymmetricAutoencoderKL.from_pretrained(out / "step2", subfolder="vae")
    pipe = tiny_pipeline(vae, tmp_path)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    result = pipe(
        "a photo of a cat",
        image=image,
        mask_image=Image.fromarray(mask),
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert result.shape == (1, 32, 32, 3) and np.isfinite(result).all()
