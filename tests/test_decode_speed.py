"""Decode speed settings (asymvae.model.decode_speed): compile and channels-last change speed, not results."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from asymvae.model.build import asymmetric_from_base
from asymvae.model.config import ModelConfig
from asymvae.model.decode import TileConfig, decode_latents
from asymvae.model.decode_speed import DecodeSpeed, apply_decode_speed, decode_speed_of
from tests.support.tiny_models import make_base_vae


@pytest.fixture(scope="module")
def asym():
    return asymmetric_from_base(make_base_vae().eval(), ModelConfig(pretrained="unused", decoder="base")).eval()


def _inputs(h: int, w: int, batch: int = 1):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, 4, h, w, generator=g)
    image = torch.rand(batch, 3, 8 * h, 8 * w, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, 8 * h, 8 * w)
    mask[..., 2 * h : 6 * h, 2 * w : 6 * w] = 1  # a centred square hole
    return z, image, mask


def test_a_bad_compile_mode_names_the_allowed_ones():
    with pytest.raises(ValueError, match="compile must be one of off, default, .*reduce-overhead"):
        DecodeSpeed(compile="fast")
    assert DecodeSpeed(compile="max-autotune").cudagraphs and not DecodeSpeed(compile="default").cudagraphs


def test_channels_last_decodes_like_nchw(asym):
    fast = copy.deepcopy(asym)
    apply_decode_speed(fast, DecodeSpeed(channels_last=True))
    assert decode_speed_of(fast) == DecodeSpeed(channels_last=True) and decode_speed_of(asym) == DecodeSpeed()
    assert fast.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not asym.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z, image, mask = _inputs(4, 4)
    with torch.no_grad():
        assert torch.allclose(decode_latents(fast, z, image, mask), decode_latents(asym, z, image, mask), atol=1e-5)
    with pytest.raises(ValueError, match="already applied"):
        apply_decode_speed(fast, DecodeSpeed(compile="default"))


@pytest.mark.parametrize(("mode", "graphs"), [("reduce-overhead", True), ("default", False)])
def test_cuda_graph_modes_mark_a_step_and_copy_the_output(asym, monkeypatch, mode, graphs):
    """With CUDA graphs the next call overwrites a call's output: decode_latents marks a new step before each
    decode and returns a copy. (The decoder runs eagerly here; the GPU benchmark runs the graphs.)"""
    vae = copy.deepcopy(asym)
    apply_decode_speed(vae, DecodeSpeed(compile=mode))
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    raw = []
    vae.decoder.register_forward_hook(lambda module, args, out: raw.append(out))
    z, image, mask = _inputs(4, 4)
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        out = decode_latents(vae, z, image, mask)
    assert len(marks) == int(graphs)
    assert torch.equal(out, raw[0]) and (out.data_ptr() != raw[0].data_ptr()) is graphs


@pytest.fixture(scope="module")
def compiled(asym):
    """The tiny VAE compiled with inductor (CPU), already compiled for the 32² batch-1 whole-image decode."""
    torch._dynamo.reset()
    vae = copy.deepcopy(asym)
    apply_decode_speed(vae, DecodeSpeed(compile="default"))
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.no_grad():
        first = decode_latents(vae, *_inputs(4, 4))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before, "nothing was compiled"
    yield vae, first
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_decode_equals_eager_with_image_and_mask(asym, compiled):
    """Inductor on the CPU: about 40 s to compile cold on 2 busy cores, seconds with inductor's cache warm."""
    vae, first = compiled
    z, image, mask = _inputs(4, 4)
    with torch.no_grad():
        eager = decode_latents(asym, z, image, mask)
        blind = decode_latents(asym, z)
    assert (eager - blind).abs().max() > 0.05  # the mask branch matters at this size
    assert torch.allclose(first, eager, atol=1e-4, rtol=0)
    assert isinstance(vae.decoder, type(asym.decoder)) and vae.state_dict().keys() == asym.state_dict().keys()


@pytest.mark.slow
def test_a_compiled_vae_decodes_tiles_eagerly_and_correctly(asym, compiled):
    """Tiles with shared GroupNorm statistics swap the norms' forwards between passes: compiled, every tile
    would recompile; decode_latents runs them eagerly instead (a recompile raises here)."""
    vae, _ = compiled
    z, image, mask = _inputs(8, 8)
    tile = TileConfig(size=32, overlap=16)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        tiled = decode_latents(vae, z, image, mask, tile)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    with torch.no_grad():
        assert torch.equal(tiled, decode_latents(asym, z, image, mask, tile))


def test_inpaint_options_carry_the_speed_settings_to_the_pipeline(asym_export_dir: Path, tmp_path: Path, monkeypatch):
    from diffusers import AsymmetricAutoencoderKL
    from PIL import Image

    from asymvae import inpaint
    from asymvae.cli import main
    from asymvae.inpaint.options import InpaintOptions

    base = dict(vae="v", pipeline="p", image="i.png", mask="m.png", prompt=["a"], out="o")
    assert InpaintOptions(**base).decode_speed == DecodeSpeed()
    with pytest.raises(ValueError, match="--compile: compile must be one of off, default"):
        InpaintOptions(**base, compile="turbo")
    with pytest.raises(ValueError, match="--compile default with --tile 512"):
        InpaintOptions(**base, compile="default", tile=512)

    seen = {}

    def load_pipeline(vae, pipeline, device=None, speed=None):
        seen["speed"] = speed
        raise SystemExit(0)

    monkeypatch.setattr(inpaint, "load_pipeline", load_pipeline)
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    Image.new("L", (32, 32)).save(tmp_path / "mask.png")
    args = ["inpaint", "--vae", "v", "--pipeline", "p", "--image", str(tmp_path / "in.png")]
    args += ["--mask", str(tmp_path / "mask.png"), "--prompt", "a", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main([*args, "--compile", "reduce-overhead", "--channels-last"])
    assert seen["speed"] == DecodeSpeed(compile="reduce-overhead", channels_last=True)

    # load_pipeline applies them to the pipeline's VAE (compiled lazily: nothing compiles until a decode).
    monkeypatch.undo()
    from tests.support.tiny_pipelines import sd_pipeline

    folder = tmp_path / "sd"
    sd_pipeline(AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae"), tmp_path).save_pretrained(
        folder
    )
    pipe = inpaint.load_pipeline(asym_export_dir, folder, device="cpu", speed=DecodeSpeed(compile="default"))
    assert decode_speed_of(pipe.vae) == DecodeSpeed(compile="default")
    assert pipe.vae.decoder._compiled_call_impl is not None
