"""Configs: presets, YAML round trips, overrides and their errors, the `configs` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asymvae.config import ConfigError, apply_overrides, load_yaml, save_yaml, to_dict
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.presets import PRESETS, get_preset, load_experiment
from asymvae.training.run import resolve_pretrained


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_yaml(name, tmp_path):
    cfg = get_preset(name)
    save_yaml(cfg, tmp_path / "c.yaml")
    assert to_dict(load_yaml(ExperimentConfig, tmp_path / "c.yaml")) == to_dict(cfg)


def test_required_presets_follow_the_recipes():
    pokemon = get_preset("asymmetric_autoencoderkl_sdv15_pokemon")
    assert pokemon.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert pokemon.model.subfolder == "vae"
    assert pokemon.model.decoder == "x1.5"
    assert pokemon.data.source == "diffusers/pokemon-gpt4-captions" and pokemon.data.resolution == 512
    assert (pokemon.loss.pixel, pokemon.loss.lpips.net, pokemon.loss.lpips.weight) == ("l1", "vgg", 1.0)
    assert (pokemon.loss.gan.weight, pokemon.loss.gan.start_step) == (0.8, 50_001)
    assert pokemon.optim.betas == (0.5, 0.9) and pokemon.optim.scale_lr
    assert pokemon.masks.full_mask_prob == 0.5
    demo = get_preset("demo")
    assert demo.data.source == "builtin:demo" and demo.model.pretrained == "preset:demo_base"


def test_a_preset_base_resolves_to_its_newest_export_in_the_given_runs_folder(tmp_path, monkeypatch):
    # The CLI's runs (the preset's own output_dir, work_dirs/NAME) and the pipeline's train step (runs_dir/NAME)
    # share one resolver.
    for run in (tmp_path / "runs" / "demo_base", tmp_path / "work_dirs" / "demo_base"):
        for step in (5, 40):
            (run / f"step{step}" / "vae").mkdir(parents=True)
            (run / f"step{step}" / "vae" / "config.json").write_text("{}")
    assert resolve_pretrained("preset:demo_base", tmp_path / "runs") == str(tmp_path / "runs/demo_base/step40/vae")
    monkeypatch.chdir(tmp_path)
    assert resolve_pretrained("preset:demo_base") == "work_dirs/demo_base/step40/vae"
    assert resolve_pretrained("org/model") == "org/model" and resolve_pretrained(None) is None


def test_overrides_are_typed():
    cfg = apply_overrides(
        get_preset("demo"),
        [
            "train.max_steps=7",
            "optim.lr=1e-4",
            "optim.betas=[0.9, 0.95]",
            "data.image_column=img",
            "train.ema=true",
        ],
    )
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.9, 0.95)
    assert cfg.data.image_column == "img" and cfg.train.ema is True
    assert apply_overrides(cfg, ["data.max_samples=null"]).data.max_samples is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_stepz=3", "Did you mean 'max_steps'"),
        ("trian.max_steps=3", "Did you mean 'train'"),
        ("train.max_steps=lots", "expected int"),
        ("train.ema=maybe", "true or false"),
        ("optim.betas=[0.9]", "expected 2 values"),
        ("data.resolution=100", "multiple of 8"),
        ("train.mixed_precision=fp8", "mixed_precision"),
        ("train.max_steps", "section.field=value"),
        ("model.kind=asymetric", "Did you mean 'asymmetric'"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("demo"), [override])


def test_load_config_from_yaml_and_unknown_names(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntrain:\n  max_steps: 12\n")
    cfg = load_experiment(str(path), ["train.batch_size=3"])
    assert (cfg.name, cfg.train.max_steps, cfg.train.batch_size) == ("mine", 12, 3)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_experiment("no_such_preset")
    with pytest.raises(ConfigError, match="Did you mean demo_base or demo"):
        load_experiment("demo_bsae")
    (tmp_path / "bad.yaml").write_text("train:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="train.bogus"):
        load_experiment(str(tmp_path / "bad.yaml"))


@pytest.mark.integration  # the CLI in a subprocess
def test_cli_lists_presets_and_reports_errors_without_traceback():
    out = subprocess.run([sys.executable, "-m", "asymvae", "configs"], capture_output=True, text=True, check=True)
    for name in PRESETS:
        assert name in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "asymvae", "train", "demo", "--train.max-stepz=1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "usage: asymvae train" in bad.stderr and "did you mean --train.max-steps?" in bad.stderr
