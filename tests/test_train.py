"""Training on tiny models: export, resume equality, NaN stop, plain VAE, EMA and GAN paths."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.config import ConfigError
from asymvae.training.checkpoint import MARKER, complete_checkpoints
from asymvae.training.config import TrainConfig
from asymvae.training.logger import TENSORBOARD_DIR, log_with
from asymvae.training.run import train
from asymvae.training.trainer import NonFiniteLossError, Trainer
from tests.support.tiny_models import tiny_config, weights


def test_train_checkpoints_and_exports_a_folder_diffusers_loads(base_vae_dir, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        result = train(tiny_config(base_vae_dir, out))
    assert result.step == 4 and result.export == out / "step4"
    vae = AsymmetricAutoencoderKL.from_pretrained(out / "step4", subfolder="vae")
    z = torch.randn(1, 4, 4, 4)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    assert vae.decode(z, image=image, mask=mask).sample.shape == (1, 3, 32, 32)
    assert (out / "step4" / "config.yaml").is_file()
    steps = [p.name for p in complete_checkpoints(out)]
    assert steps == ["step-00000002", "step-00000004"]
    for folder in complete_checkpoints(out):
        assert (folder / MARKER).is_file() and (folder / "config.yaml").is_file()
    assert not list(out.rglob("*.tmp")), "temporary folders left behind"
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"train/loss", "train/l1", "opt/lr", "perf/img_per_s", "perf/data_wait_pct"} <= r.keys() for r in rows)
    # one log line per checkpoint, not accelerate's line per file it writes
    assert f"checkpoint written: {out / 'checkpoints' / 'step-00000004'}" in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("accelerate") and r.levelno < 30]


def test_train_writes_tensorboard_scalars_and_the_validation_grid_and_logs_eta(base_vae_dir, tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        train(tiny_config(base_vae_dir, out, "train.validate_every=2", "train.validation_images=3"))
    (events,) = (out / TENSORBOARD_DIR / "tiny").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for key in ("train/loss", "train/l1", "opt/lr", "opt/grad_norm", "perf/img_per_s", "perf/data_wait_pct"):
        assert key in scalars, (key, scalars)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["train/loss"] for r in rows])
    grids = acc.Images("val/grid")
    assert [g.step for g in grids] == [2, 4]
    # one row per validation image, four columns (input, masked, decoded, error) of 32 pixels
    assert (grids[0].height, grids[0].width) == (3 * 32, 4 * 32)
    # the human line: where, since when, how fast, until when
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert lines[0].startswith("step 1/4 (25%), ") and " elapsed, " in lines[0] and " step/s, ETA " in lines[0]
    assert lines[-1].startswith("step 4/4 (100%)") and "ETA 0s" in lines[-1]
    for quiet in ("loading base model from", "waiting for the first batch"):
        assert quiet in caplog.text


def test_report_to_names_a_tracker_that_is_not_installed_and_refuses_an_unknown_one():
    from accelerate.tracking import get_available_trackers

    assert log_with("none") == [] and log_with("tensorboard") == ["tensorboard"]
    absent = [t for t in ("wandb", "mlflow") if t not in {str(a) for a in get_available_trackers()}]
    if not absent:
        pytest.skip("wandb and mlflow are both installed here")
    missing = absent[0]
    with pytest.raises(ConfigError, match=f"train.report_to={missing} but {missing} is not installed. Fix: pip"):
        log_with(missing)
    with pytest.raises(ValueError, match="train.report_to must be one of"):
        TrainConfig(report_to="tensorbord")


@pytest.mark.parametrize(
    "extra",
    [
        (),
        # every piece of state at once: accumulation, EMA, the discriminator and its optimizer
        (
            "train.grad_accum=2",
            "train.ema=true",
            "train.ema_decay=0.9",
            "loss.gan.weight=0.8",
            "loss.gan.start_step=1",
        ),
    ],
    ids=["plain", "accum-ema-gan"],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(base_vae_dir, tmp_path, extra):
    straight = tmp_path / "straight"
    train(tiny_config(base_vae_dir, straight, *extra))
    expected = weights(straight / "step4")

    # A run killed after its step-2 checkpoint: that checkpoint is all that is left of it.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    trainer = Trainer(tiny_config(base_vae_dir, resumed, *extra), pretrained=str(base_vae_dir))
    assert trainer.resume() == 2
    result = trainer.fit()
    assert result.step == 4
    got = weights(resumed / "step4")
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(
        base_vae_dir,
        out,
        "optim.lr=1e30",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "optim.max_grad_norm=null",
        "train.checkpoint_every=1",
        "train.max_steps=6",
    )
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    assert "NaN or infinite" in str(err.value) and "--resume" in str(err.value)
    saved = complete_checkpoints(out)
    assert saved, "the good checkpoint before the blow-up must remain"
    assert saved[-1].name in str(err.value)
    assert not list(out.glob("step*")), "no export of bad weights"


def test_plain_autoencoderkl_trains_its_decoder_and_optionally_encoder(base_vae_dir, tmp_path):
    out = tmp_path / "plain"
    result = train(tiny_config(base_vae_dir, out, "model.kind=autoencoderkl", "model.train_encoder=true"))
    assert "kl" in result.metrics
    before = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae").state_dict()
    after = weights(out / "step4")
    assert not torch.equal(after["encoder.conv_in.weight"], before["encoder.conv_in.weight"])
    assert not torch.equal(after["decoder.conv_out.weight"], before["decoder.conv_out.weight"])


def test_frozen_parts_are_unchanged_after_training(base_vae_dir, tmp_path):
    out = tmp_path / "frozen"
    train(tiny_config(base_vae_dir, out))
    before = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae").state_dict()
    after = weights(out / "step4")
    for key, value in before.items():
        if key.startswith(("encoder.", "quant_conv.", "post_quant_conv.")):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["decoder.conv_out.weight"], before["decoder.conv_out.weight"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_keep_fp32_weights(base_vae_dir, tmp_path, precision):
    out = tmp_path / precision
    result = train(tiny_config(base_vae_dir, out, f"train.mixed_precision={precision}", "train.max_steps=2"))
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    exported = weights(out / "step2")
    assert exported["decoder.conv_out.weight"].dtype == torch.float32
