"""Model building: sizes, weight copying, freezing, fine-tuning an existing model, gradient checkpointing."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.model.build import ModelSourceError, build_vae, decoder_sizes
from asymvae.model.checkpointing import enable_gradient_checkpointing
from asymvae.model.config import ModelConfig
from asymvae.model.hub import SD15_INPAINTING, current_hub_id
from asymvae.model.trainable import Reconstructor

SD_CHANNELS = [128, 256, 512, 512]


@pytest.mark.parametrize(
    ("preset", "channels", "layers"),
    [("base", SD_CHANNELS, 2), ("x1.5", [192, 384, 768, 768], 3), ("x2", [256, 512, 1024, 1024], 5)],
)
def test_decoder_presets_match_the_paper_on_sd_sizes(preset, channels, layers):
    cfg = ModelConfig(pretrained="x", decoder=preset)
    assert decoder_sizes(cfg, SD_CHANNELS, 2, 32) == (channels, layers)


def test_x15_on_sd_has_the_paper_parameter_count():
    # anchors: x1.5 decoder 160.1M params incl. a 24.3M mask branch; built on the meta device (no memory).
    channels, layers = decoder_sizes(ModelConfig(pretrained="x", decoder="x1.5"), SD_CHANNELS, 2, 32)
    with torch.device("meta"):
        vae = AsymmetricAutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            down_block_out_channels=SD_CHANNELS,
            layers_per_down_block=2,
            up_block_types=("UpDecoderBlock2D",) * 4,
            up_block_out_channels=channels,
            layers_per_up_block=layers,
        )
    decoder = sum(p.numel() for p in vae.decoder.parameters()) / 1e6
    branch = sum(p.numel() for p in vae.decoder.condition_encoder.parameters()) / 1e6
    assert round(decoder, 1) == 160.1
    assert round(branch, 1) == 24.3


def test_custom_sizes_are_checked():
    cfg = ModelConfig(pretrained="x", decoder="custom", decoder_channels=[48, 96, 96], decoder_layers=2)
    with pytest.raises(ValueError, match="levels"):
        decoder_sizes(cfg, SD_CHANNELS, 2, 32)
    cfg = ModelConfig(pretrained="x", decoder="custom", decoder_channels=[40, 96, 96, 96], decoder_layers=2)
    with pytest.raises(ValueError, match="multiples"):
        decoder_sizes(cfg, SD_CHANNELS, 2, 32)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_base_size_copies_every_weight_but_the_branch(base_vae_dir):
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae")
    vae = build_vae(ModelConfig(pretrained=str(base_vae_dir), decoder="base"))
    assert isinstance(vae, AsymmetricAutoencoderKL)
    for part in ("encoder", "quant_conv", "post_quant_conv", "decoder"):
        theirs = getattr(base, part).state_dict()
        ours = getattr(vae, part).state_dict()
        for key, value in theirs.items():
            assert torch.equal(ours[key], value), f"{part}.{key} not copied"
    branch = [k for k in vae.decoder.state_dict() if k.startswith("condition_encoder.")]
    assert branch and all(k not in base.decoder.state_dict() for k in branch)
    assert vae.config.scaling_factor == base.config.scaling_factor


def test_bigger_decoder_copies_encoder_only(base_vae_dir):
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae")
    vae = build_vae(ModelConfig(pretrained=str(base_vae_dir), decoder="x1.5"))
    assert list(vae.config.up_block_out_channels) == [48, 48, 96, 96]
    assert vae.config.layers_per_up_block == 2
    assert torch.equal(vae.encoder.conv_in.weight, base.encoder.conv_in.weight)
    assert torch.equal(vae.post_quant_conv.weight, base.post_quant_conv.weight)


def test_encoder_is_frozen_and_gets_no_gradient(base_vae_dir):
    vae = build_vae(ModelConfig(pretrained=str(base_vae_dir), decoder="base"))
    model = Reconstructor(vae)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    rec, kl = model(x, mask, generator=torch.Generator().manual_seed(0))
    assert kl is None
    rec.abs().mean().backward()
    for part in ("encoder", "quant_conv", "post_quant_conv"):
        for name, p in getattr(vae, part).named_parameters():
            assert not p.requires_grad and p.grad is None, f"{part}.{name} would train"
    assert all(p.grad is not None for p in vae.decoder.parameters())
    assert vae.decoder.condition_encoder.layers[0].weight.grad.abs().sum() > 0


def test_post_quant_conv_can_be_trained(base_vae_dir):
    vae = build_vae(ModelConfig(pretrained=str(base_vae_dir), train_post_quant_conv=True))
    assert all(p.requires_grad for p in vae.post_quant_conv.parameters())
    assert not any(p.requires_grad for p in vae.encoder.parameters())


def test_existing_asymmetric_model_is_fine_tuned_as_is(base_vae_dir, tmp_path):
    first = build_vae(ModelConfig(pretrained=str(base_vae_dir), decoder="x1.5"))
    first.save_pretrained(tmp_path / "vae")
    again = build_vae(ModelConfig(pretrained=str(tmp_path), decoder="x2"))  # decoder ignored: it exists
    assert isinstance(again, AsymmetricAutoencoderKL)
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_plain_autoencoderkl_and_scratch(base_vae_dir):
    plain = build_vae(ModelConfig(kind="autoencoderkl", pretrained=str(base_vae_dir)))
    assert type(plain) is AutoencoderKL
    assert not any(p.requires_grad for p in plain.encoder.parameters())
    plain = build_vae(ModelConfig(kind="autoencoderkl", pretrained=str(base_vae_dir), train_encoder=True))
    assert all(p.requires_grad for p in plain.encoder.parameters())
    scratch = build_vae(
        ModelConfig(kind="autoencoderkl", pretrained=None, scratch_channels=[32, 32, 64, 64], norm_num_groups=8)
    )
    assert all(p.requires_grad for p in scratch.parameters())
    _, kl = Reconstructor(scratch)(torch.rand(1, 3, 32, 32), None)
    assert kl is not None and kl > 0


def test_bad_sources_say_what_is_wrong(tmp_path, base_vae_dir):
    with pytest.raises(ModelSourceError, match="does not exist"):
        build_vae(ModelConfig(pretrained="./no/such/folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="holds no diffusers VAE"):
        build_vae(ModelConfig(pretrained=str(tmp_path / "empty")))
    with pytest.raises(ModelSourceError, match="hub"):
        build_vae(ModelConfig(pretrained="nobody/no-such-vae-offline"))
    with pytest.raises(ValueError, match="needs model.pretrained"):
        ModelConfig(kind="asymmetric", pretrained=None)


def test_removed_hub_ids_map_to_where_they_moved(caplog):
    with caplog.at_level(logging.WARNING, logger="asymvae.model.hub"):
        assert current_hub_id("runwayml/stable-diffusion-v1-5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
        assert current_hub_id("runwayml/stable-diffusion-inpainting") == SD15_INPAINTING
        assert current_hub_id("madebyollin/sdxl-vae-fp16-fix") == "madebyollin/sdxl-vae-fp16-fix"
    assert [r.getMessage().count("\n") for r in caplog.records] == [0, 0]
    assert "using stable-diffusion-v1-5/stable-diffusion-v1-5 instead" in caplog.records[0].getMessage()
    # offline, the error names the id that was looked up: the new one
    with pytest.raises(ModelSourceError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        build_vae(ModelConfig(pretrained="runwayml/stable-diffusion-v1-5", subfolder="vae"))


def test_diffusers_own_switch_still_raises_and_ours_matches_gradients(base_vae_dir):
    vae = build_vae(ModelConfig(pretrained=str(base_vae_dir), decoder="x1.5"))
    with pytest.raises(ValueError):
        vae.enable_gradient_checkpointing()  # the diffusers gap this project works around

    torch.manual_seed(0)
    z = torch.randn(2, 4, 4, 4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()

    def grads() -> dict[str, torch.Tensor]:
        vae.zero_grad(set_to_none=True)
        out = vae.decode(z, image=x, mask=mask).sample
        (out.square().mean()).backward()
        return {n: p.grad.clone() for n, p in vae.decoder.named_parameters()}

    plain = grads()
    assert enable_gradient_checkpointing(vae.decoder) > 0
    assert vae.decoder.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
