"""The speed settings of the training step: compile and channels-last change speed, not results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asymvae.config import ConfigError
from asymvae.training.presets import load_experiment
from asymvae.training.trainer import Trainer
from asymvae.training.update import posterior_seed, speed_switch
from tests.support.tiny_models import tiny_config


def test_speed_switches_parse_from_the_command_line() -> None:
    assert load_experiment("demo", ["train.compile=off"]).train.compile == "off"
    assert load_experiment("demo", ["train.compile=on", "train.channels_last=true"]).train.channels_last == "on"
    assert load_experiment("demo").train.compile == "auto"
    with pytest.raises((ConfigError, ValueError), match="train.compile"):
        load_experiment("demo", ["train.compile=fast"])
    with pytest.raises((ConfigError, ValueError), match="compile_mode"):
        load_experiment("demo", ["train.compile_mode=turbo"])


def test_auto_means_on_only_where_it_pays() -> None:
    assert speed_switch("auto", True) and not speed_switch("auto", False)
    assert speed_switch("on", False) and not speed_switch("off", True)


def test_posterior_seed_depends_on_every_coordinate() -> None:
    base = posterior_seed(0, 10, 0, 0)
    assert base == posterior_seed(0, 10, 0, 0)
    others = {posterior_seed(1, 10, 0, 0), posterior_seed(0, 11, 0, 0), posterior_seed(0, 10, 1, 0)}
    others.add(posterior_seed(0, 10, 0, 1))
    assert base not in others and len(others) == 4


def test_cpu_training_leaves_compile_off_by_default(base_vae_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(base_vae_dir, tmp_path / "run"))
    assert trainer.update.describe()["compile"] is False
    assert trainer.update.describe()["channels_last"] is False


@pytest.mark.slow
def test_compiled_channels_last_step_trains_like_eager(base_vae_dir: Path, tmp_path: Path) -> None:
    """torch.compile (inductor, on the CPU here) + channels-last give the eager run's weights."""
    results = {}
    for mode in ("off", "on"):
        cfg = tiny_config(
            base_vae_dir, tmp_path / mode, f"train.compile={mode}", f"train.channels_last={mode}",
            "train.checkpoint_every=100",
        )  # fmt: skip
        trainer = Trainer(cfg)
        assert trainer.update.describe()["compile"] is (mode == "on")
        before = torch.cat([p.detach().flatten() for p in trainer.params]).clone()
        result = trainer.fit()
        results[mode] = (result.metrics["loss"], torch.cat([p.detach().flatten() for p in trainer.params]))
    (loss_off, w_off), (loss_on, w_on) = results["off"], results["on"]
    assert loss_on == pytest.approx(loss_off, rel=1e-3)
    # Adam moves every weight by up to ~lr per step; rounding differences of the fused kernels may shift a
    # weight by a small part of that, never by as much as training moved it.
    moved = float((w_off - before).abs().max())
    assert moved > 1e-3, "the eager run did not train"
    assert float((w_on - w_off).abs().max()) < 0.2 * moved
