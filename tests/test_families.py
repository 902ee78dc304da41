"""Every diffusers KL VAE family as a base: SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1 (tiny random bases of their shape)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.config import ConfigError, from_dict
from asymvae.model.build import ModelSourceError, asymmetric_from_base, build_vae
from asymvae.model.config import ModelConfig
from asymvae.model.family import FAMILIES, family_of
from asymvae.model.files import load_vae
from asymvae.model.latent_space import LatentTransform
from asymvae.training.presets import PRESETS, describe, get_preset
from tests.support.tiny_models import family_base


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_asymmetric_model_encodes_exactly_as_its_base_and_records_what_pipelines_read(name, tmp_path):
    family = FAMILIES[name]
    base = family_base(name)
    assert (base.quant_conv is None) == (not family.quant_convs)
    vae = asymmetric_from_base(base, ModelConfig(pretrained="unused", decoder="x1.5"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ours, theirs = vae.encode(x).latent_dist, base.encode(x).latent_dist
    # Bit for bit (CPU, float32): the identity convs of SD3/FLUX-shaped models change nothing.
    assert torch.equal(ours.mean, theirs.mean) and torch.equal(ours.logvar, theirs.logvar)
    assert ours.mean.shape[1] == family.latent_channels
    if not family.quant_convs:
        eye = torch.eye(family.latent_channels).view(family.latent_channels, family.latent_channels, 1, 1)
        assert torch.equal(vae.post_quant_conv.weight, eye) and not vae.post_quant_conv.bias.any()

    expected = {"scaling_factor": family.scaling_factor, "shift_factor": family.shift_factor, "force_upcast": True}
    vae.save_pretrained(tmp_path / "vae")
    written = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert {k: written[k] for k in expected} == expected and written["_class_name"] == "AsymmetricAutoencoderKL"
    # diffusers 0.42.1's from_pretrained re-registers config.json keys __init__ does not take, so the stock class
    # loads these right (only constructing the class from arguments forgets them: that was build's bug).
    stock = AsymmetricAutoencoderKL.from_pretrained(tmp_path, subfolder="vae")
    assert {k: stock.config[k] for k in expected} == expected
    assert {k: load_vae(tmp_path).config[k] for k in expected} == expected
    assert family_of(stock.config) is family


def test_the_stock_constructor_forgets_shift_and_upcast():
    """Why build records them: what the class registers when constructed from the base's sizes."""
    bare = AsymmetricAutoencoderKL(latent_channels=16, scaling_factor=0.3611)
    assert bare.config.force_upcast is False and "shift_factor" not in bare.config


def test_base_without_mid_block_attention_is_refused():
    base = family_base("flux", mid_block_add_attention=False)
    with pytest.raises(ModelSourceError, match="mid_block_add_attention=False"):
        asymmetric_from_base(base, ModelConfig(pretrained="unused", decoder="base"))


def test_family_of_tells_the_families_apart_and_knows_when_none_fits():
    assert [family_of(dict(f.vae_kwargs())) for f in FAMILIES.values()] == list(FAMILIES.values())
    assert family_of({"latent_channels": 16, "scaling_factor": 0.3611}) is None  # FLUX's scaling, no shift
    assert family_of({"latent_channels": 4}).name == "sd"  # SD 1.x configs leave scaling_factor out


def test_latent_transform_matches_the_pipelines_formulas():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 3, 3, generator=g)
    flux = LatentTransform.of(FAMILIES["flux"].vae_kwargs())
    assert torch.allclose(flux.to_vae(latents), latents / 0.3611 + 0.1159)
    assert torch.allclose(flux.from_vae(flux.to_vae(latents)), latents, atol=1e-6)
    sd = LatentTransform.of({"scaling_factor": 0.18215, "shift_factor": None})
    assert torch.equal(sd.to_vae(latents), latents / 0.18215) and sd.describe() == "latent / 0.18215"
    # SDXL's pipelines, for a VAE with latents_mean/std: latents * std / scaling + mean.
    mean, std = [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 0.5, 1.5]
    stats = LatentTransform.of({"scaling_factor": 0.5, "latents_mean": mean, "latents_std": std})
    want = latents * torch.tensor(std).view(1, 4, 1, 1) / 0.5 + torch.tensor(mean).view(1, 4, 1, 1)
    assert torch.allclose(stats.to_vae(latents), want)
    assert torch.allclose(stats.from_vae(want), latents, atol=1e-6)


def test_scratch_family_gives_a_plain_vae_the_family_interface():
    cfg = ModelConfig(
        kind="autoencoderkl", pretrained=None, scratch_channels=[8, 8, 16, 16], norm_num_groups=8, scratch_family="sd3"
    )
    vae = build_vae(cfg)
    assert vae.quant_conv is None and vae.post_quant_conv is None and vae.config.latent_channels == 16
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (1.5305, 0.0609)
    assert all(p.requires_grad for p in vae.parameters())  # from scratch everything trains
    with pytest.raises(ConfigError, match="scratch_family must be one of sd, sdxl, sd3, flux"):
        from_dict(ModelConfig, {"scratch_family": "sd4"})


def test_family_presets_name_real_hub_repos_and_say_when_they_are_gated():
    repos = {r.id: r for f in FAMILIES.values() for r in f.repos}
    hub = [n for n in PRESETS if n.startswith("asymmetric_autoencoderkl_") and "finetune" not in n]
    assert len(hub) == 6
    for name in hub:
        cfg = get_preset(name)
        repo = repos[cfg.model.pretrained]
        assert cfg.model.subfolder == "vae" and cfg.name == name
        assert ("gated" in describe(name)) == repo.gated, name
    for family in ("sdxl", "sd3", "flux"):
        base, demo = get_preset(f"demo_base_{family}"), get_preset(f"demo_{family}")
        assert base.model.scratch_family == family and demo.model.pretrained == f"preset:demo_base_{family}"


def test_the_inpaint_loader_keeps_the_family_config_and_hub_errors_name_the_token(tmp_path):
    from asymvae.inpaint import batched_condition_vae
    from asymvae.model.build import pretrained_class

    vae = asymmetric_from_base(family_base("sd3"), ModelConfig(pretrained="unused", decoder="base"))
    copy = batched_condition_vae(vae)
    assert (copy.config.shift_factor, copy.config.force_upcast) == (0.0609, True)
    vae.save_pretrained(tmp_path / "vae")
    assert batched_condition_vae(tmp_path).config.shift_factor == 0.0609
    # Offline here, so the hub cannot answer; the message says what a gated repo needs.
    with pytest.raises(ModelSourceError, match="gated repo .* set HF_TOKEN or run `hf auth login`"):
        pretrained_class("stabilityai/stable-diffusion-3-medium-diffusers", "vae")


def test_loading_does_not_warn_that_kept_config_keys_are_ignored(tmp_path, caplog):
    """diffusers warns that shift_factor/force_upcast "will be ignored" although from_pretrained keeps them;
    load_vae drops that warning, and only that one: an unknown key still gets it."""
    asymmetric_from_base(family_base("flux"), ModelConfig(decoder="base")).save_pretrained(tmp_path / "vae")
    with caplog.at_level("WARNING", logger="diffusers"):
        vae = load_vae(tmp_path)
    assert vae.config.shift_factor == FAMILIES["flux"].shift_factor and vae.config.force_upcast is True
    assert "will be ignored" not in caplog.text
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, "made_up_key": 1}))
    with caplog.at_level("WARNING", logger="diffusers"):
        load_vae(tmp_path)
    assert "made_up_key" in caplog.text and "will be ignored" in caplog.text
