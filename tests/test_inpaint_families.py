"""Inpainting with the asymmetric VAE in every pipeline kind: SD 1.x, SDXL, SD3, FLUX inpaint and FLUX fill.

Real diffusers pipelines of tiny random parts (tests/support/tiny_pipelines.py), offline. The proof that the decoder saw
the image: `inpaint`'s output equals a direct `vae.decode(z, image=, mask=)` of the pipeline's own latents under
the family's transform, and differs from a blind decode where pixels are kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusionXLInpaintPipeline
from PIL import Image

pytest.importorskip("transformers", reason="transformers builds the tiny text encoders")

from asymvae.cli import main
from asymvae.inpaint import InpaintInputError, InpaintRequest, inpaint, load_pipeline, pipeline_kind
from asymvae.model.decode import TileConfig, decode_latents
from tests.support.tiny_pipelines import BUILDERS, family_vae, flux_pipeline, sd_pipeline

pytestmark = pytest.mark.integration  # every test builds tiny diffusers pipelines and runs them

PROMPTS = ["a photo of a cat", "a dog"]


def _image_and_mask(size: int = 32) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[4:20, 10:28] = 255  # white = hole
    return image, Image.fromarray(mask)


def _request(**changes) -> InpaintRequest:
    image, mask = _image_and_mask()
    return dataclasses.replace(InpaintRequest(PROMPTS, image, mask, num_images_per_prompt=2, steps=2), **changes)


def _latents(pipe, request: InpaintRequest, output_type: str = "latent") -> torch.Tensor:
    """The pipeline's own output for `request` run by itself: its latents (what `inpaint` runs it for), as it
    returns them, or its own decode with `output_type="pt"`."""
    return pipe(
        request.prompts,
        image=request.image,
        mask_image=request.mask,
        num_images_per_prompt=request.num_images_per_prompt,
        num_inference_steps=request.steps,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(request.seed),
        output_type=output_type,
    ).images


def _pixels(pil_images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in pil_images])


@pytest.mark.parametrize("cls", sorted(BUILDERS))
def test_each_pipeline_decodes_with_the_unmasked_image(cls, tmp_path):
    family, build = BUILDERS[cls]
    vae = family_vae(family)
    pipe = build(vae, tmp_path)
    pipe.set_progress_bar_config(disable=True)
    request = _request()
    images = inpaint(pipe, request)
    assert len(images) == 4 and all(im.size == (32, 32) for im in images)  # 2 prompts x 2 images, prompt-major

    # Independently: the pipeline's latents, in (B, C, h, w) form, under the family's transform written out here.
    latents = _latents(pipe, request)
    if pipeline_kind(pipe).packed_latents:
        latents = type(pipe)._unpack_latents(latents, 32, 32, pipe.vae_scale_factor)
    shift = vae.config.get("shift_factor") or 0.0
    z = latents / vae.config.scaling_factor + shift
    image = pipe.image_processor.preprocess(request.image, height=32, width=32).repeat(4, 1, 1, 1)
    mask = pipe.mask_processor.preprocess(request.mask, height=32, width=32).repeat(4, 1, 1, 1)
    assert set(mask.unique().tolist()) == {0.0, 1.0} and mask[0, 0, 10, 20] == 1  # white became 1 = hole
    with torch.no_grad():
        direct = vae.decode(z, image=image, mask=mask).sample
        blind = vae.decode(z).sample
    got = _pixels(images)
    want = _pixels(pipe.image_processor.postprocess(direct, output_type="pil"))
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6  # equal up to uint8 rounding
    keep = (mask[:, 0] == 0).numpy()
    unit = (blind.clamp(-1, 1) + 1) / 2
    assert np.abs(got - unit.permute(0, 2, 3, 1).numpy())[keep].mean() > 0.02  # a blind decode is another image


@pytest.mark.parametrize("cls", ["StableDiffusionXLInpaintPipeline", "StableDiffusion3InpaintPipeline"])
def test_our_latent_transform_is_the_pipelines_own_except_sd3_inpaints_missing_shift(cls, tmp_path):
    """Decoding blind, the pipeline's own decode path equals ours for SDXL (and the text-to-image formula for
    every family); diffusers 0.42.1's SD3 inpaint pipeline leaves `+ shift_factor` out (diffusers#13611)."""
    family, build = BUILDERS[cls]
    vae = family_vae(family)
    pipe = build(vae, tmp_path)
    pipe.set_progress_bar_config(disable=True)
    request = _request(num_images_per_prompt=1)
    latents = _latents(pipe, request)
    own = _latents(pipe, request, output_type="pt")
    scaled = latents / vae.config.scaling_factor
    with torch.no_grad():
        ours = (vae.decode(scaled + (vae.config.get("shift_factor") or 0.0)).sample + 1) / 2
        unshifted = (vae.decode(scaled).sample + 1) / 2
    if family == "sd3":
        assert torch.allclose(own, unshifted.clamp(0, 1), atol=1e-5) and (own - ours.clamp(0, 1)).abs().max() > 1e-3
    else:
        assert torch.allclose(own, ours.clamp(0, 1), atol=1e-5)


def test_tiled_decode_inside_a_pipeline(tmp_path):
    vae = family_vae("flux")
    pipe = flux_pipeline(vae, tmp_path)
    pipe.set_progress_bar_config(disable=True)
    tile = TileConfig(size=16, overlap=8)
    request = _request(num_images_per_prompt=1, tile=tile)
    images = inpaint(pipe, request)
    z = type(pipe)._unpack_latents(_latents(pipe, request), 32, 32, pipe.vae_scale_factor) / 0.3611 + 0.1159
    image = pipe.image_processor.preprocess(request.image, height=32, width=32).repeat(2, 1, 1, 1)
    mask = pipe.mask_processor.preprocess(request.mask, height=32, width=32).repeat(2, 1, 1, 1)
    with torch.no_grad():
        tiled = decode_latents(vae, z, image, mask, tile)
    want = _pixels(pipe.image_processor.postprocess(tiled, output_type="pil"))
    assert np.abs(_pixels(images) - want).max() <= 1 / 255 + 1e-6
    with pytest.raises(InpaintInputError, match="--tile: tile size 12 and overlap 4 are not multiples"):
        inpaint(pipe, _request(tile=TileConfig(size=12, overlap=4)))


def test_the_sd_safety_checker_still_applies(tmp_path):
    """The SD pipeline's safety checker runs on our decode as it would on the pipeline's own (here it flags
    everything, so the images come back black)."""
    transformers = pytest.importorskip("transformers")
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1}
    checker = StableDiffusionSafetyChecker(
        transformers.CLIPConfig(
            text_config={**small, "vocab_size": 10},
            vision_config={**small, "image_size": 32, "patch_size": 8},
            projection_dim=16,
        )
    ).eval()
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image scores above every concept's threshold
    extractor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = sd_pipeline(family_vae("sd"), tmp_path, safety_checker=checker, feature_extractor=extractor)
    pipe.set_progress_bar_config(disable=True)
    images = inpaint(pipe, _request(num_images_per_prompt=1))
    assert len(images) == 2 and not _pixels(images).any()


def test_inpaint_command_with_a_flux_text_to_image_folder_and_a_fill_folder(tmp_path, capsys):
    vae = family_vae("flux")
    model = tmp_path / "model"
    vae.save_pretrained(model / "vae")
    (tmp_path / "parts").mkdir()
    flux_pipeline(vae, tmp_path / "parts", FluxPipeline).save_pretrained(tmp_path / "flux")
    BUILDERS["FluxFillPipeline"][1](vae, tmp_path / "parts").save_pretrained(tmp_path / "fill")
    image, mask = _image_and_mask()
    image.save(tmp_path / "in.png")
    mask.save(tmp_path / "mask.png")

    def cli(pipeline: str, out: str, *extra: str) -> tuple[int, str]:
        args = ["inpaint", "--vae", str(model), "--pipeline", pipeline, "--image", str(tmp_path / "in.png")]
        args += ["--mask", str(tmp_path / "mask.png"), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]]
        args += ["--num-images-per-prompt", "2", "--steps", "2", "--out", str(tmp_path / out), *extra]
        with pytest.raises(SystemExit) as exc:
            main(args)
        return exc.value.code, capsys.readouterr().err

    for folder in ("flux", "fill"):  # FluxPipeline's folder runs as FluxInpaintPipeline
        code, err = cli(str(tmp_path / folder), folder, "--tile", "16", "--tile-overlap", "8")
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / folder).glob("prompt*.png")) == [
            "prompt0_0.png",
            "prompt0_1.png",
            "prompt1_0.png",
            "prompt1_1.png",
        ]
    assert type(load_pipeline(model, tmp_path / "flux", device="cpu")).__name__ == "FluxInpaintPipeline"

    code, err = cli(str(tmp_path / "fill"), "bad", "--height", "24")
    assert code == 2 and "positive multiples of 16" in err  # FLUX packs 2x2 latent patches: 16 px
    code, err = cli(str(tmp_path / "fill"), "bad", "--tile", "16", "--tile-overlap", "16")
    assert code == 2 and "below the tile size" in err
    (tmp_path / "parts" / "sdxl").mkdir()
    sdxl = tmp_path / "sdxl"
    StableDiffusionXLInpaintPipeline.save_pretrained(BUILDERS["StableDiffusionXLInpaintPipeline"][1](
        family_vae("sdxl"), tmp_path / "parts" / "sdxl"), sdxl)  # fmt: skip
    code, err = cli(str(sdxl), "bad")
    assert code == 2 and "--vae decodes 16-channel latents (latent / 0.3611 + 0.1159)" in err
    assert "makes 4-channel latents (latent / 0.13025)" in err
    assert not (tmp_path / "bad").exists()


def test_a_float16_vae_decodes_in_float32_when_its_config_asks_for_upcast(tmp_path):
    from asymvae.inpaint import decode_pipeline_latents

    pipe = BUILDERS["StableDiffusionXLInpaintPipeline"][1](family_vae("sdxl"), tmp_path)
    image, mask = _image_and_mask()
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    pipe.vae.half()
    assert pipe.vae.config.force_upcast is True  # SDXL's VAE overflows in float16
    upcast = decode_pipeline_latents(pipe, latents, image, mask, 32, 32)
    assert upcast.dtype == torch.float32 and pipe.vae.dtype == torch.float16  # cast back afterwards
    pipe.vae.register_to_config(force_upcast=False)
    assert decode_pipeline_latents(pipe, latents, image, mask, 32, 32).dtype == torch.float16
