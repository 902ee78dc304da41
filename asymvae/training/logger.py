"""Training metrics: one logger, pluggable sinks, namespaced keys, the same keys in every sink.

`fit()` hands `MetricsLogger.log` one row every `train.log_every` steps (rank 0 only); each sink writes it:
- `JsonlSink`: `OUTPUT/logs/metrics.jsonl`, one JSON object per row (`step` plus the keys below);
- `PrometheusSink`: the gauges rank 0 serves on /metrics (`metrics.py`);
- `TrackerSink`: accelerate's experiment trackers (`train.report_to`: TensorBoard event files in
  `OUTPUT/logs/tensorboard/<run name>/` by default, wandb or MLflow where installed), which also take the
  validation grid;
- `ProgressSink`: a tqdm bar on a terminal, else a log line with elapsed time, rate and ETA at most every
  `LINE_EVERY_S` seconds (and on the first and last row).

Keys: `train/<term>` the loss terms of the last micro-step (`train/loss`, `train/l1`, `train/lpips`, `train/kl`,
`train/g_adv`, `train/d_weight`, `train/d_loss`, `train/logits_real`); `opt/lr`, `opt/grad_norm` (before clipping);
`perf/img_per_s` and `perf/data_wait_pct` over the window since the last row.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from tqdm.auto import tqdm

from asymvae.config import ConfigError
from asymvae.progress import format_duration, format_rate
from asymvae.training import metrics as live_metrics

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "logs/tensorboard"
"""Under the run's output folder: TensorBoard's log dir (one run per experiment name beneath it)."""
LINE_EVERY_S = 30.0
"""Without a terminal, a progress line is logged at most this often (and on the first and the last row)."""
VALIDATION_IMAGE = "val/grid"
"""Name of the validation grid in the trackers."""
LOSS = "train/"
"""Prefix of the loss terms."""
LR, GRAD_NORM = "opt/lr", "opt/grad_norm"
IMG_PER_S, DATA_WAIT_PCT = "perf/img_per_s", "perf/data_wait_pct"


def metrics_row(terms: dict[str, float], lr: float, img_per_s: float, data_wait_pct: float) -> dict[str, float]:
    """One row of metrics, namespaced: the loss terms of a step (`grad_norm` among them goes to `opt/`)."""
    row = {(GRAD_NORM if k == "grad_norm" else LOSS + k): v for k, v in terms.items()}
    row.update({LR: lr, IMG_PER_S: img_per_s, DATA_WAIT_PCT: data_wait_pct})
    return row


def log_with(report_to: str) -> list[str]:
    """accelerate's `log_with` for `train.report_to`; a tracker that is named but not installed is refused."""
    if report_to == "none":
        return []
    if report_to == "all":
        return ["all"]
    if report_to not in {str(t) for t in get_available_trackers()}:
        raise ConfigError(
            f"train.report_to={report_to} but {report_to} is not installed. Fix: pip install {report_to}, or "
            "--train.report-to tensorboard (or none)"
        )
    return [report_to]


def progress_text(step: int, total: int, elapsed_s: float, steps_per_s: float) -> str:
    """`step 120/1000 (12%), 4m10s elapsed, 0.48 step/s, ETA 30m33s`: where a run is and when it will end, in the
    words and units of prepare's, eval's and export's progress lines (`asymvae.progress`)."""
    eta = format_duration((total - step) / steps_per_s) if steps_per_s > 0 else "?"
    return (
        f"step {step}/{total} ({100 * step // max(total, 1)}%), {format_duration(elapsed_s)} elapsed, "
        f"{format_rate(steps_per_s, 'step')}, ETA {eta}"
    )


class Sink(Protocol):
    """Where metric rows go."""

    def write(self, step: int, row: dict[str, float]) -> None:
        """Take one row of the step `step`."""

    def close(self) -> None:
        """The run has ended (or failed)."""


class JsonlSink:
    """Appends each row to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, row: dict[str, float]) -> None:
        """Append `{"step": step, **row}`."""
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")

    def close(self) -> None:
        """Nothing is held open."""


class PrometheusSink:
    """Sets the gauges served on /metrics (`metrics.record`; off unless a port is configured)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def write(self, step: int, row: dict[str, float]) -> None:
        """Publish the row."""
        live_metrics.record(self.cfg, {"step": step, **row})

    def close(self) -> None:
        """The server outlives the run (several runs in one process share it)."""


class TrackerSink:
    """accelerate's experiment trackers (`Accelerator(log_with=...)`), started on rank 0 by `init_trackers`."""

    def __init__(self, accelerator: Accelerator, run_name: str) -> None:
        self.accelerator = accelerator
        accelerator.init_trackers(run_name)

    def write(self, step: int, row: dict[str, float]) -> None:
        """Scalars, one per key."""
        self.accelerator.log(row, step=step)

    def image(self, name: str, step: int, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 image, to every tracker that takes images."""
        for tracker in self.accelerator.trackers:
            if not hasattr(tracker, "log_images"):
                continue
            if tracker.name == "tensorboard":  # SummaryWriter.add_images: one array of N images
                tracker.log_images({name: image[None]}, step=step, dataformats="NHWC")
            else:  # wandb and the others: a list of images
                tracker.log_images({name: [image]}, step=step)

    def close(self) -> None:
        """Finish every tracker (flushes TensorBoard's event file). Not `accelerator.end_training()`, which also
        destroys the process group that a later run in this process (a `preset:` base first) still uses."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers = []


class ProgressSink:
    """A tqdm bar when stderr is a terminal; otherwise a log line with elapsed time, rate and ETA."""

    def __init__(self, name: str, start_step: int, total: int, bar: bool) -> None:
        self.total, self.start_step = total, start_step
        self.started = self.last_line = time.perf_counter()
        self.lines = 0
        self.bar = tqdm(total=total, initial=start_step, desc=name, unit="step", dynamic_ncols=True) if bar else None

    def write(self, step: int, row: dict[str, float]) -> None:
        """Move the bar, or log a line when `LINE_EVERY_S` has passed since the last (or it is the first/last)."""
        shown = _shown(row)
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.perf_counter()
        if self.lines and step < self.total and now - self.last_line < LINE_EVERY_S:
            return
        elapsed = now - self.started
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        figures = " ".join(f"{k}={v}" for k, v in shown.items())
        log.info("%s %s", progress_text(step, self.total, elapsed, rate), figures)
        self.last_line, self.lines = now, self.lines + 1

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def _shown(row: dict[str, float]) -> dict[str, str]:
    terms = ("loss", "l1", "l2", "lpips", "g_adv", "d_loss", "kl")
    shown = {k: f"{row[LOSS + k]:.4f}" for k in terms if LOSS + k in row and math.isfinite(row[LOSS + k])}
    shown["img/s"] = f"{row[IMG_PER_S]:.1f}"
    shown["lr"] = f"{row[LR]:.2e}"
    return shown


class MetricsLogger:
    """Hands every row to every sink; images to the sinks that take them."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, step: int, row: dict[str, float]) -> None:
        """One row of metrics of step `step` (keys as in the module's docstring)."""
        for sink in self.sinks:
            sink.write(step, row)

    def image(self, name: str, step: int, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 image of step `step`."""
        for sink in self.sinks:
            if isinstance(sink, TrackerSink):
                sink.image(name, step, image)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


def training_logger(cfg: Any, accelerator: Accelerator, start_step: int) -> MetricsLogger:
    """The logger of a run (`cfg`: its ExperimentConfig): every sink on rank 0, none elsewhere."""
    if not accelerator.is_main_process:
        return MetricsLogger([])
    t = cfg.train
    bar = t.progress and sys.stderr.isatty()
    sinks: list[Sink] = [
        JsonlSink(cfg.output_dir / "logs" / "metrics.jsonl"),
        PrometheusSink(cfg),
        ProgressSink(cfg.name, start_step, t.max_steps, bar),
    ]
    if accelerator.log_with:
        sinks.append(TrackerSink(accelerator, cfg.name))
    return MetricsLogger(sinks)
