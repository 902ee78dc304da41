"""The run's checkpoints as one object: save the current step, load one, pick the newest complete one and fall
back past a damaged one. What a checkpoint holds is the trainer's (`stateful`); how it is laid out on disk
and checked is `checkpoint` and `state_files`; the copy in an object store is `mirror`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from asymvae.data.sampler import PositionError
from asymvae.errors import UserError
from asymvae.storage.faults import writing
from asymvae.storage.local import publish, staging_dir
from asymvae.training import checkpoint as ckpt
from asymvae.training.mirror import RunMirror
from asymvae.training.state_files import is_state_folder, load_state, rng_state, save_state

log = logging.getLogger(__name__)

Stateful = Callable[[], tuple[list[nn.Module], dict[str, Any]]]
"""Returns the models and the other objects (by file name, see `state_files`) a checkpoint keeps."""


class Checkpointer:
    """Saves and loads the checkpoints of the run in `output_dir` (collective: every process calls each method).

    `step` returns the optimizer step reached (read after a load, written into each checkpoint's marker);
    `images_per_step` is the global batch, recorded beside it. `mirror`, when given, receives every
    checkpoint once complete and offers its newest one before a resume.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        output_dir: Path,
        config_yaml: str,
        stateful: Stateful,
        step: Callable[[], int],
        images_per_step: int,
        keep: int,
        mirror: RunMirror | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.out = Path(output_dir)
        self.config_yaml = config_yaml
        self.stateful = stateful
        self.step = step
        self.images_per_step = images_per_step
        self.keep = keep
        self.mirror = mirror

    def latest(self) -> Path | None:
        """The newest complete checkpoint of the run, or None."""
        return ckpt.latest_checkpoint(self.out)

    def resume(self, path: str | Path | None = None) -> int:
        """Load `path`, or the newest intact checkpoint of this run; returns the step reached (0: none found).

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
            problem = self.load(folder)
            if problem is None:
                log.info("resumed from %s at step %d", folder, self.step())
                if changes:
                    shown = ", ".join(f"{k}: {there!r} -> {here!r}" for k, (there, here) in changes.items())
                    log.warning("resumed with config changes since %s was written: %s", folder.name, shown)
                if self.accelerator.is_main_process:
                    ckpt.record_resume(self.out, folder, self.step(), changes)
                if skipped:
                    log.warning("resumed from %s, the newest intact checkpoint; skipped %s", folder, "; ".join(skipped))
                return self.step()
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
        """Before a resume, give this node the newest checkpoint of the mirror when it is newer than its own:
        rank 0 first (uploading its own when that is the newer), then the first process of every other node
        (each node may have a disk of its own; on a shared one, the others find it there already)."""
        acc = self.accelerator
        if self.mirror is None:
            return
        for first in (True, False):
            if acc.is_local_main_process and acc.is_main_process == first:
                self.mirror.sync(self.out, self.keep, upload=first)
            acc.wait_for_everyone()

    def load(self, folder: Path) -> str | None:
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
                load_state(folder, *self.stateful(), rank=self.accelerator.process_index)
            except PositionError as e:
                raise PositionError(f"cannot resume from {folder}: {e}") from None
            except UserError:
                raise
            except Exception as e:  # damaged in a way its checksums cannot show (a checkpoint from before them)
                problem = f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if self.accelerator.num_processes > 1:
            problem = next((p for p in gather_object([problem]) if p), None)
        return problem

    def save(self) -> Path:
        """Write a resumable checkpoint of the current step, then prune to the newest `keep` (and mirror it)."""
        acc, step = self.accelerator, self.step()
        final = ckpt.checkpoints_root(self.out) / ckpt.checkpoint_name(step)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with writing("a checkpoint", final):
                if acc.is_main_process:
                    tmp = staging_dir(final)
                acc.wait_for_everyone()
                rngs = gather_object([rng_state()]) if acc.num_processes > 1 else [rng_state()]
                save_state(tmp, *self.stateful(), rngs=rngs, main=acc.is_main_process)
                acc.wait_for_everyone()
                if acc.is_main_process:
                    (tmp / "config.yaml").write_text(self.config_yaml)
                    ckpt.write_marker(tmp, {"step": step, "images": step * self.images_per_step})
                    publish(tmp, final)
                    log.info("checkpoint written: %s", final)
        except BaseException:
            if acc.is_main_process:  # a full disk must not stay full of a checkpoint that does not count
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if acc.is_main_process:
            ckpt.prune(self.out, self.keep)
            if self.mirror is not None:
                self.mirror.upload_checkpoint(final)
                self.mirror.prune(self.keep)
        acc.wait_for_everyone()
        return final
