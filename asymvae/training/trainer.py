"""The training loop: accelerate for devices, precision, DDP and state; everything seeded by the step."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from asymvae.config import to_dict
from asymvae.data.dataset import TrainImages
from asymvae.data.images import BadImageError
from asymvae.data.provenance import provenance
from asymvae.data.sampler import PositionError, ResumableBatchSampler
from asymvae.data.scan import BAD_LIST_NAME, scan_source
from asymvae.data.sources import open_source
from asymvae.data.streaming import ShardStream, StreamPosition
from asymvae.errors import UserError
from asymvae.storage.local import check_replaceable
from asymvae.training.checkpointer import Checkpointer
from asymvae.training.config import TrainConfig
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.logger import TENSORBOARD_DIR, VALIDATION_IMAGE, log_with, metrics_row, training_logger
from asymvae.training.mirror import RunMirror
from asymvae.training.output import export_dir, write_export
from asymvae.training.state_files import STATE_NAME
from asymvae.training.update import build_update
from asymvae.training.validation import validation_batch, validation_grid

log = logging.getLogger(__name__)


def ddp_settings(t: TrainConfig) -> DistributedDataParallelKwargs:
    """DDP's gradient buckets: gradients live in the buckets (no copy, 640 MB less for the x1.5 decoder).

    static_graph stays off: the GAN phase adds parameters to the graph mid-run, and gradient
    accumulation skips synchronisation on some micro-steps.
    """
    return DistributedDataParallelKwargs(bucket_cap_mb=t.ddp_bucket_mb, gradient_as_bucket_view=True)


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    step: int
    export: Path
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class TrainState:
    """Step counter and data position: checkpointed with the model so resume neither repeats nor skips data.

    The number of processes and of DataLoader workers may change between save and resume (the position
    does not depend on them); the per-process batch size may not: it is part of the recipe.
    """

    sampler: ResumableBatchSampler | StreamPosition
    batch_size: int
    step: int = 0

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint (`state_files`)."""
        return {"step": self.step, "batch_size": self.batch_size, "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """For the checkpoint (`state_files`); raises PositionError for a checkpoint of another batch size."""
        saved = state.get("batch_size", self.batch_size)
        if saved != self.batch_size:
            raise PositionError(
                f"the checkpoint was made with train.batch_size={saved}, this run has {self.batch_size}. Fix: "
                f"resume with --train.batch-size {saved}, or start a new run (another --output)."
            )
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])


class Trainer:
    """Builds everything from an ExperimentConfig, then `fit()` trains, checkpoints and exports."""

    def __init__(self, cfg: ExperimentConfig, pretrained: str | None = None) -> None:
        self.cfg = cfg
        self.out = cfg.output_dir
        t = cfg.train
        # The export this run will write: refused now, not after the training, when it is not asymvae's.
        check_replaceable(export_dir(self.out, t.max_steps))
        # One process may train several configs in turn (a `preset:` base first): accelerate keeps its
        # settings in process-wide singletons, so clear them (the process group in PartialState stays).
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        # cpu=True when there is no GPU: accelerate only forms a gloo group across CPU processes when told so.
        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision,
            gradient_accumulation_steps=t.grad_accum,
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[ddp_settings(t)],
            log_with=log_with(t.report_to),
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / TENSORBOARD_DIR)),
        )
        acc = self.accelerator
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if acc.num_processes != world:
            raise RuntimeError(f"WORLD_SIZE={world} but accelerate formed a group of {acc.num_processes}")
        # The mirror is checked (and claimed) before anything is built: a store that cannot be used stops the run now.
        self.mirror = RunMirror(t.mirror) if t.mirror else None
        if self.mirror is not None and acc.is_main_process:
            self.mirror.claim()
        set_seed(t.seed)
        self.config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)

        self.base_model = pretrained or cfg.model.pretrained  # what the weights were loaded from, for the export
        self.update = build_update(cfg, acc, pretrained)
        self.images_per_step = self.update.images_per_step
        self.params = self.update.params
        self.scheduler = self.update.scheduler

        self.sampler, self.dataset = self._data()
        self.state = TrainState(self.sampler, t.batch_size)

        self.update.prepare()
        log.info("speed settings: %s", self.update.describe())
        self.ema = EMAModel(self.params, decay=t.ema_decay) if t.ema else None
        self.checkpoints = Checkpointer(
            acc, self.out, self.config_yaml, self._stateful, lambda: self.state.step, self.images_per_step,
            t.keep_checkpoints, self.mirror,
        )  # fmt: skip

    def _data(self) -> tuple[ResumableBatchSampler | StreamPosition, TrainImages | ShardStream]:
        cfg, acc = self.cfg, self.accelerator
        d = cfg.data
        if d.shards:  # prepared shards (`asymvae prepare`), streamed; the position lives in the stream
            stream = ShardStream.open(d.shards, d, cfg.masks, cfg.train.seed, acc.process_index, acc.num_processes)
            return stream.position, stream
        source = open_source(d.source, split=d.split, image_column=d.image_column, max_samples=d.max_samples)
        # Rank 0 validates every image once; the others take its list, so all ranks agree on the data.
        good = [None]
        if acc.is_main_process:
            report = scan_source(
                source,
                d.effective_min_side,
                d.max_bad_share,
                progress=cfg.train.progress,
                bad_list=self.out / "logs" / BAD_LIST_NAME,
            )
            if report.bad:
                log.warning("%s", report.summary())
            good = [report.good]
        if acc.num_processes > 1:
            broadcast_object_list(good, from_process=0)
        log.info("training on %d images from %s", len(good[0]), source.description)
        sampler = ResumableBatchSampler(
            len(good[0]), cfg.train.batch_size, acc.num_processes, acc.process_index, cfg.train.seed
        )
        return sampler, TrainImages(source, good[0], d, cfg.masks, cfg.train.seed)

    def _loader(self) -> DataLoader:
        d, pin = self.cfg.data, self.accelerator.device.type == "cuda"
        if isinstance(self.dataset, ShardStream):
            return DataLoader(self.dataset, self.cfg.train.batch_size, num_workers=d.num_workers, pin_memory=pin)
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=d.num_workers, pin_memory=pin)

    # -- checkpoints ---------------------------------------------------------------------------------

    def resume(self, path: str | Path | None = None) -> int:
        """Load `path`, or the newest intact checkpoint of this run; returns the step reached (see
        `Checkpointer.resume`)."""
        step = self.checkpoints.resume(path)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        return step

    def _stateful(self) -> tuple[list[torch.nn.Module], dict[str, Any]]:
        """The models and the other objects a checkpoint keeps, by file name (see `state_files`)."""
        acc, update = self.accelerator, self.update
        models = [acc.unwrap_model(update.model)]
        objects: dict[str, Any] = {"optimizer": update.optimizer, "scheduler": self.scheduler, STATE_NAME: self.state}
        if update.disc is not None:
            models.append(acc.unwrap_model(update.disc))
            objects["optimizer_1"] = update.disc_optimizer
        if self.ema is not None:
            objects["ema"] = self.ema
        if acc.scaler is not None:
            objects["scaler"] = acc.scaler
        return models, objects

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train to `train.max_steps`, checkpointing on the way; export on rank 0 at the end."""
        cfg, acc, t = self.cfg, self.accelerator, self.cfg.train
        device = acc.device
        start = time.perf_counter()
        loader = self._loader()
        metrics = training_logger(cfg, acc, self.state.step)
        shown = self._validation_images() if acc.is_main_process and t.validate_every else None
        nonfinite = torch.zeros((), device=device)
        last_good = self.checkpoints.latest()
        terms: dict[str, torch.Tensor] = {}
        window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
        micro = 0
        batches = iter(loader)
        log.info("waiting for the first batch (%d DataLoader workers per process)", cfg.data.num_workers)
        try:
            while self.state.step < t.max_steps:
                waited = time.perf_counter()
                try:
                    batch = next(batches)
                except UserError as e:  # bad data met by a DataLoader worker: one line, like anywhere else
                    raise _from_worker(e) from None
                data_wait += time.perf_counter() - waited
                pixels = batch["pixels"].to(device, non_blocking=True)
                mask = batch["mask"].to(device, non_blocking=True)
                if log.isEnabledFor(logging.DEBUG):  # which images each step used: tests check no repeats or gaps
                    epochs = f" epochs {batch['epoch'].tolist()}" if "epoch" in batch else ""
                    log.debug(
                        "rank %d step %d images %s%s", acc.process_index, self.state.step, batch["index"].tolist(),
                        epochs,
                    )  # fmt: skip
                terms = self.update(pixels, mask, self.state.step, micro)
                nonfinite += ~torch.isfinite(terms["loss"])
                self.sampler.advance(batch)
                micro += 1
                if not acc.sync_gradients:
                    continue
                self.state.step += 1
                window_steps += 1
                if self.ema is not None:
                    self.ema.step(self.params)
                step = self.state.step
                last = step == t.max_steps
                if step % t.log_every == 0 or step % t.checkpoint_every == 0 or last:
                    self._check_finite(nonfinite, terms, last_good)
                if step % t.log_every == 0 or last:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    row = metrics_row(
                        {k: float(v) for k, v in terms.items()},
                        lr=self.scheduler.get_last_lr()[0],
                        img_per_s=window_steps * self.images_per_step / elapsed,
                        data_wait_pct=100.0 * data_wait / elapsed,
                    )
                    metrics.log(step, row)
                    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
                if shown is not None and (step % t.validate_every == 0 or last):
                    with acc.autocast():
                        grid = validation_grid(self.update.inner, *(x.to(device) for x in shown))
                    metrics.image(VALIDATION_IMAGE, step, grid)
                if step % t.checkpoint_every == 0 or last:
                    last_good = self.checkpoints.save()
        finally:
            metrics.close()
        result = TrainResult(self.state.step, self._export(), {k: float(v) for k, v in terms.items()})
        result.seconds = time.perf_counter() - start
        return result

    def _validation_images(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The validation grid's images, or None (with a warning) when they cannot be read: like a metrics
        server, the grid never stops a training; damaged training data still does, when the loader meets it."""
        try:
            return validation_batch(self.cfg, self.dataset)
        except (UserError, BadImageError) as e:
            log.warning("no validation grid in this run: %s", e)
            return None

    def _check_finite(self, nonfinite: torch.Tensor, terms: dict[str, torch.Tensor], last_good: Path | None) -> None:
        # One host sync per log/checkpoint interval, not per step; a bad step is caught before any save.
        if int(self.accelerator.reduce(nonfinite.clone(), reduction="sum")) == 0:
            return
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at or before step {self.state.step} ({shown}). "
            f"Stopped without saving these weights; the last good checkpoint is {last_good or 'none (none saved yet)'}"
            f"{'' if last_good is None else ' (continue with --resume)'}. Usual causes: a learning rate too high "
            "(optim.lr), fp16 overflow (use train.mixed_precision=bf16 or no), or broken input images."
        )

    def _export(self) -> Path:
        acc = self.accelerator
        self._check_replicas_agree()
        vae = self.update.inner.vae
        path = self.out / f"step{self.state.step}"
        if acc.is_main_process:
            record = provenance(self.base_model, self.dataset)
            if self.ema is not None:
                self.ema.store(self.params)
                self.ema.copy_to(self.params)
            path = write_export(vae, self.out, self.state.step, self.config_yaml, record)
            if self.ema is not None:
                self.ema.restore(self.params)
            if self.mirror is not None:
                self.mirror.upload_export(path, self.state.step)
                self.mirror.upload_logs(self.out / TENSORBOARD_DIR)  # closed by now: fit() closed the trackers
        acc.wait_for_everyone()
        return path

    def _check_replicas_agree(self) -> None:
        """With several processes, verify every rank ends with identical weights before exporting."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        with torch.no_grad():
            local = torch.stack([torch.cat([p.detach().double().flatten() for p in self.params]).sum()])
        sums = acc.gather(local.to(acc.device)).cpu()
        spread = float(sums.max() - sums.min())
        if spread > 1e-6 * max(1.0, float(sums.abs().max())):
            raise RuntimeError(f"ranks ended with different weights (checksums {sums.tolist()}): DDP sync failed")
        log.info("weights identical on all %d ranks (checksum %.10g)", acc.num_processes, float(sums[0]))


def _from_worker(error: UserError) -> UserError:
    """The error a DataLoader worker raised, as raised there: torch re-raises it in the main process with the
    worker's whole traceback as its message, which ends with `module.Class: <the original message>`."""
    cls = type(error)
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    text = str(error)
    at = text.rfind(marker)
    return cls(text[at + len(marker) :].rstrip("\n")) if at >= 0 else error
