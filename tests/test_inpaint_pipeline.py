"""The exported VAE in diffusers' StableDiffusionInpaintPipeline (tiny random components, offline); other kinds:
tests/test_inpaint_families.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AsymmetricAutoencoderKL
from PIL import Image

from asymvae.training.run import train
from tests.support.tiny_models import tiny_config

pytest.importorskip("transformers", reason="transformers builds the tiny text encoder")
from tests.support.tiny_pipelines import sd_pipeline


def test_exported_vae_runs_inside_the_inpaint_pipeline(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(base_vae_dir, out, "train.max_steps=2"))
    vae = AsymmetricAutoencoderKL.from_pretrained(out / "step2", subfolder="vae")
    pipe = sd_pipeline(vae, tmp_path)
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


# --- batched prompts and num_images_per_prompt > 1 -------------------------------------------------------


def _inputs():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:20, 10:28] = 255
    return image, Image.fromarray(mask)


def _call(pipe, prompts, n):
    image, mask = _inputs()
    return pipe(
        prompts,
        image=image,
        mask_image=mask,
        height=32,
        width=32,
        num_images_per_prompt=n,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images


@pytest.fixture(scope="module")
def asym_vae(asym_export_dir):
    return AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae").eval()


@pytest.mark.parametrize(("prompts", "n"), [("a photo of a cat", 2), (["a photo of a cat", "a cat"], 1)])
def test_stock_pipeline_fails_with_batches_and_ours_works(asym_vae, tmp_path, prompts, n):
    from asymvae.inpaint import batched_condition_vae

    stock = sd_pipeline(asym_vae, tmp_path)
    with pytest.raises(KeyError):  # diffusers 0.42.1: the branch's features are keyed by the 1-image shape
        _call(stock, prompts, n)
    ours = sd_pipeline(batched_condition_vae(asym_vae), tmp_path)
    images = _call(ours, prompts, n)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


def test_batched_condition_decode_equals_decoding_with_the_condition_repeated(asym_vae):
    from asymvae.inpaint import BatchedConditionVAE, batched_condition_vae, repeat_to_batch

    ours = batched_condition_vae(asym_vae)
    assert isinstance(ours, BatchedConditionVAE) and isinstance(ours, AsymmetricAutoencoderKL)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, 4, 4, generator=g)
    image = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    with torch.no_grad():
        got = ours.decode(z, image=image, mask=mask).sample
        # Tiled like the pipeline's masks: rows 0, 1, 0, 1.
        want = asym_vae.decode(z, image=image.repeat(2, 1, 1, 1), mask=mask.repeat(2, 1, 1, 1)).sample
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(repeat_to_batch(mask, 4)[2], mask[0])
    with pytest.raises(ValueError, match="batch 2 over 3"):
        repeat_to_batch(mask, 3)


def test_inpaint_command_with_two_prompts_and_two_images_each(asym_vae, asym_export_dir, tmp_path, capsys):
    from asymvae.cli import main

    pipeline_dir = tmp_path / "sd-inpaint"
    sd_pipeline(asym_vae, tmp_path).save_pretrained(pipeline_dir)
    image, mask = _inputs()
    image.save(tmp_path / "in.png")
    mask.save(tmp_path / "mask.png")
    args = [
        "inpaint",
        "--vae",
        str(asym_export_dir),
        "--pipeline",
        str(pipeline_dir),
        "--image",
        str(tmp_path / "in.png"),
    ]
    args += ["--mask", str(tmp_path / "mask.png"), "--prompt", "a photo of a cat", "--prompt", "a cat"]
    args += ["--num-images-per-prompt", "2", "--steps", "2", "--guidance-scale", "1", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0, capsys.readouterr().err
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == ["prompt0_0.png", "prompt0_1.png", "prompt1_0.png", "prompt1_1.png"]
    assert Image.open(tmp_path / "out" / "prompt1_1.png").size == (32, 32)
    assert Image.open(tmp_path / "out" / "prompt1_1.png").text["Software"] == "asymvae inpaint"
    with pytest.raises(SystemExit) as exc:  # its own outputs asymvae replaces
        main(args)
    assert exc.value.code == 0, capsys.readouterr().err

    bad = [*args]
    bad[bad.index("--mask") + 1] = str(tmp_path / "missing.png")
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2 and "missing.png: no such file" in capsys.readouterr().err
    bad = [*args]
    bad[bad.index("--pipeline") + 1] = str(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2 and "model_index.json" in capsys.readouterr().err


def test_batched_condition_vae_loads_an_export_folder_and_refuses_a_plain_vae(asym_export_dir, base_vae_dir, asym_vae):
    from asymvae.inpaint import BatchedConditionVAE, batched_condition_vae
    from asymvae.model.build import ModelSourceError

    loaded = batched_condition_vae(asym_export_dir)
    assert type(loaded) is BatchedConditionVAE
    theirs = asym_vae.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ModelSourceError, match="holds a AutoencoderKL, but a AsymmetricAutoencoderKL is needed"):
        batched_condition_vae(base_vae_dir)
