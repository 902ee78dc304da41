"""The training loop: accelerate for devices, precision, DDP and state; everything seeded by the step."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object, set_seed
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from asymvae.config import to_dict
from asymvae.data.dataset import TrainImages
from asymvae.data.provenance import provenance
from asymvae.data.sampler import PositionError, ResumableBatchSampler
from asymvae.data.scan import BAD_LIST_NAME, scan_source
from asymvae.data.sources import open_source
from asymvae.data.streaming import ShardStream, StreamPosition
from asymvae.errors import UserError
from asymvae.losses.perceptual import build_lpips
from asymvae.model.build import build_vae
from asymvae.storage.faults import writing
from asymvae.storage.local import check_replaceable, publish, staging_dir
from asymvae.training import checkpoint as ckpt
from asymvae.training import metrics as live_metrics
from asymvae.training.config import TrainConfig
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.mirror import RunMirror
from asymvae.training.output import export_dir, write_export
from asymvae.training.state_files import STATE_NAME, is_state_folder, load_state, rng_state, save_state
from asymvae.training.step import TrainStep

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
        self.step_fn = TrainStep(cfg, acc, build_vae(cfg.model, pretrained), build_lpips(cfg.loss.lpips))
        self.images_per_step = self.step_fn.images_per_step
        self.params = self.step_fn.params
        self.scheduler = self.step_fn.scheduler

        self.sampler, self.dataset = self._data()
        self.state = TrainState(self.sampler, t.batch_size)

        self.step_fn.prepare()
        log.info("speed settings: %s", self.step_fn.describe())
        self.ema = EMAModel(self.params, decay=t.ema_decay) if t.ema else None

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

    # -- checkpoints -------------------------------------------------------------------------------

    def resume(self, path: str | Path | None = None) -> int:
        """Load `path`, or the newest intact checkpoint of this run; returns the step reached.

        Without `path`, a damaged checkpoint (see `checkpoint.damage`) or one that cannot be loaded is
        skipped, with a warning that says why, for the one before it. Raises CheckpointError when `path` is
        not an intact checkpoint or no checkpoint of the run is, PositionError when the data position
        cannot be continued (another batch size, other data). A checkpoint made for another model (a changed
        `model.` key) is refused; other config changes are logged and recorded in `logs/resumes.jsonl`.
        """
        if path is not None:
            folder = Path(path).expanduser()
            if not (folder / ckpt.MARKER).is_file():
                what = "is not a complete checkpoint (no COMPLETE marker)" if folder.is_dir() else "does not exist"
                raise ckpt.CheckpointError(
                    f"--resume-from {folder} {what}. Fix: give a checkpoint folder; {ckpt.describe(self.out)}."
                )
            candidates = [folder]
        else:
            self._sync_mirror()
            candidates = ckpt.complete_checkpoints(self.out)[::-1]
            if not candidates:
                log.info("no checkpoint in %s: starting from step 0", ckpt.checkpoints_root(self.out))
                return 0
        skipped = []
        for folder in candidates:
            changes = ckpt.config_changes(folder, self.config_yaml)
            ckpt.refuse_another_model(folder, changes)
            problem = self._load(folder)
            if problem is None:
                log.info("resumed from %s at step %d", folder, self.state.step)
                if changes:
                    shown = ", ".join(f"{k}: {there!r} -> {here!r}" for k, (there, here) in changes.items())
                    log.warning("resumed with config changes since %s was written: %s", folder.name, shown)
                if self.accelerator.is_main_process:
                    ckpt.record_resume(self.out, folder, self.state.step, changes)
                if skipped:
                    log.warning("resumed from %s, the newest intact checkpoint; skipped %s", folder, "; ".join(skipped))
                return self.state.step
            log.warning("checkpoint %s is damaged: %s", folder, problem)
            skipped.append(f"{folder.name}: {problem}")
        if path is not None:
            raise ckpt.CheckpointError(
                f"checkpoint {candidates[0]} is damaged: {problem}. Fix: resume with --resume instead, which takes "
                f"the newest intact checkpoint ({ckpt.describe(self.out)}), or start anew without it."
            )
        raise ckpt.CheckpointError(
            f"no checkpoint in {ckpt.checkpoints_root(self.out)} is intact ({'; '.join(skipped)}). Fix: start "
            "anew without --resume (or with another --output)."
        )

    def _sync_mirror(self) -> None:
        """Before a resume, give this node the newest checkpoint of `train.mirror` when it is newer than its own:
        rank 0 first (uploading its own when that is the newer), then the first process of every other node
        (each node may have a disk of its own; on a shared one, the others find it there already)."""
        acc = self.accelerator
        if self.mirror is None:
            return
        for first in (True, False):
            if acc.is_local_main_process and acc.is_main_process == first:
                self.mirror.sync(self.out, self.cfg.train.keep_checkpoints, upload=first)
            acc.wait_for_everyone()

    def _stateful(self) -> tuple[list[torch.nn.Module], dict[str, Any]]:
        """The models and the other objects a checkpoint keeps, by file name (see `state_files`)."""
        acc, step_fn = self.accelerator, self.step_fn
        models = [acc.unwrap_model(step_fn.model)]
        objects: dict[str, Any] = {"optimizer": step_fn.optimizer, "scheduler": self.scheduler, STATE_NAME: self.state}
        if step_fn.disc is not None:
            models.append(acc.unwrap_model(step_fn.disc))
            objects["optimizer_1"] = step_fn.disc_optimizer
        if self.ema is not None:
            objects["ema"] = self.ema
        if acc.scaler is not None:
            objects["scaler"] = acc.scaler
        return models, objects

    def _load(self, folder: Path) -> str | None:
        """Load a checkpoint into the run; returns what is wrong with it instead when it is damaged (on any
        rank: the ranks agree, so that all load the same one)."""
        problem = ckpt.damage(folder)
        if problem is None and not is_state_folder(folder):
            raise ckpt.CheckpointError(
                f"checkpoint {folder} was written by an earlier asymvae in pickle files (accelerate's .bin and "
                ".pkl), which asymvae does not load: unpickling a file can run any code. Fix: start anew (another "
                "--output), initialised from that run's last export with --model.pretrained OUTPUT/step<N>/vae."
            )
        if problem is None:
            try:
                load_state(folder, *self._stateful(), rank=self.accelerator.process_index)
            except PositionError as e:
                raise PositionError(f"cannot resume from {folder}: {e}") from None
            except UserError:
                raise
            except Exception as e:  # damaged in a way its checksums cannot show (a checkpoint from before them)
                problem = f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            if problem is None and self.ema is not None:
                self.ema.to(self.accelerator.device)
        if self.accelerator.num_processes > 1:
            problem = next((p for p in gather_object([problem]) if p), None)
        return problem

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step (collective: every process calls it)."""
        acc = self.accelerator
        final = ckpt.checkpoints_root(self.out) / ckpt.checkpoint_name(self.state.step)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with writing("a checkpoint", final):
                if acc.is_main_process:
                    tmp = staging_dir(final)
                acc.wait_for_everyone()
                rngs = gather_object([rng_state()]) if acc.num_processes > 1 else [rng_state()]
                save_state(tmp, *self._stateful(), rngs=rngs, main=acc.is_main_process)
                acc.wait_for_everyone()
                if acc.is_main_process:
                    (tmp / "config.yaml").write_text(self.config_yaml)
                    images = self.state.step * self.images_per_step
                    ckpt.write_marker(tmp, {"step": self.state.step, "images": images})
                    publish(tmp, final)
                    log.info("checkpoint written: %s", final)
        except BaseException:
            if acc.is_main_process:  # a full disk must not stay full of a checkpoint that does not count
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if acc.is_main_process:
            ckpt.prune(self.out, self.cfg.train.keep_checkpoints)
            if self.mirror is not None:
                self.mirror.upload_checkpoint(final)
                self.mirror.prune(self.cfg.train.keep_checkpoints)
        acc.wait_for_everyone()
        return final

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train to `train.max_steps`, checkpointing on the way; export on rank 0 at the end."""
        cfg, acc, t = self.cfg, self.accelerator, self.cfg.train
        device = acc.device
        start = time.perf_counter()
        metrics_file = self.out / "logs" / "metrics.jsonl"
        if acc.is_main_process:
            metrics_file.parent.mkdir(parents=True, exist_ok=True)
        loader = self._loader()
        bar = tqdm(
            total=t.max_steps,
            initial=self.state.step,
            desc=cfg.name,
            unit="step",
            # A bar only on a terminal; in pod logs and CI the same figures come as log lines instead.
            disable=not (acc.is_main_process and t.progress and sys.stderr.isatty()),
            dynamic_ncols=True,
        )
        nonfinite = torch.zeros((), device=device)
        last_good = ckpt.latest_checkpoint(self.out)
        terms: dict[str, torch.Tensor] = {}
        window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
        micro = 0
        batches = iter(loader)
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
                    "rank %d step %d images %s%s", acc.process_index, self.state.step, batch["index"].tolist(), epochs
                )
            terms = self.step_fn(pixels, mask, self.state.step, micro)
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
            if step % t.log_every == 0 or step % t.checkpoint_every == 0 or step == t.max_steps:
                self._check_finite(nonfinite, terms, last_good)
            if step % t.log_every == 0 or step == t.max_steps:
                elapsed = time.perf_counter() - window_start
                row = {k: float(v) for k, v in terms.items()}
                row.update(
                    step=step,
                    lr=self.scheduler.get_last_lr()[0],
                    img_per_s=window_steps * self.images_per_step / max(elapsed, 1e-9),
                    data_wait_pct=100.0 * data_wait / max(elapsed, 1e-9),
                )
                if acc.is_main_process:
                    with metrics_file.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    live_metrics.record(cfg, row)
                bar.set_postfix(_postfix(row), refresh=False)
                if bar.disable and acc.is_main_process:
                    shown = " ".join(f"{k}={v}" for k, v in _postfix(row).items())
                    log.info("step %d/%d %s", step, t.max_steps, shown)
                window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
            bar.update(1)
            if step % t.checkpoint_every == 0 or step == t.max_steps:
                last_good = self.save_checkpoint()
        bar.close()
        result = TrainResult(self.state.step, self._export(), {k: float(v) for k, v in terms.items()})
        result.seconds = time.perf_counter() - start
        return result

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
        vae = self.step_fn.inner.vae
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


def _postfix(row: dict[str, float]) -> dict[str, str]:
    keys = ("loss", "l1", "l2", "lpips", "g_adv", "d_loss", "kl")
    shown = {k: f"{row[k]:.4f}" for k in keys if k in row and math.isfinite(row[k])}
    shown["img/s"] = f"{row['img_per_s']:.1f}"
    shown["lr"] = f"{row['lr']:.2e}"
    return shown
