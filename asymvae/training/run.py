"""Run a training job from a config: resolve `preset:` bases, train, report."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

from asymvae.storage.ownership import own_folder
from asymvae.training import metrics as live_metrics
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.launch import process_rank
from asymvae.training.output import latest_export
from asymvae.training.presets import get_preset
from asymvae.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

PRESET_PREFIX = "preset:"


def resolve_pretrained(spec: str | None, runs_dir: str | Path | None = None) -> str | None:
    """`preset:NAME` → the folder (`vae/`) of that preset's newest export, training the preset first (resuming)
    when it has none; anything else unchanged. The preset's run is its own `train.output_dir`, or `runs_dir/NAME`
    when `runs_dir` is given (the pipeline's train step, whose job then gets the base as a plain path)."""
    if not spec or not spec.startswith(PRESET_PREFIX):
        return spec
    name = spec[len(PRESET_PREFIX) :]
    base_cfg = get_preset(name)
    if runs_dir is not None:
        base_cfg.train.output_dir = str(Path(runs_dir) / base_cfg.name)
    found = latest_export(base_cfg.output_dir)
    if found is None:
        log.info(
            "model.pretrained=%s: no export in %s yet, training preset %s first",
            spec,
            base_cfg.output_dir,
            name,
        )
        found = train(base_cfg, resume=True).export
    else:
        log.info("model.pretrained=%s: using %s", spec, found)
    return str(Path(found) / "vae")


def train(cfg: ExperimentConfig, resume: bool | str = False) -> TrainResult:
    """Train `cfg` to the end; `resume=True` continues from the newest checkpoint, a string from that folder.

    The outcome (success or the error, steps, duration, final losses) is pushed once to the Pushgateway
    when one is configured (`train.pushgateway` / PUSHGATEWAY_URL). Rank 0 holds the output folder for the
    whole run (`storage.ownership`): a second run into it stops with one line naming this one.
    """
    start, trainer = time.perf_counter(), None
    try:
        pretrained = resolve_pretrained(cfg.model.pretrained)
        with own_folder(cfg.output_dir, f"asymvae train {cfg.name}") if process_rank() == 0 else nullcontext():
            trainer = Trainer(cfg, pretrained=pretrained)
            if resume:
                trainer.resume(resume if isinstance(resume, str) else None)
            result = trainer.fit()
    except BaseException as e:
        steps = trainer.state.step if trainer is not None else 0
        live_metrics.push_outcome(cfg, False, steps, time.perf_counter() - start, error=e)
        raise
    live_metrics.push_outcome(cfg, True, result.step, time.perf_counter() - start, result.metrics)
    return result
