"""A run's checkpoints and export mirrored to an object store (`train.mirror`), so that a run needs no shared volume.

The mirror holds the run folder's own layout below its URI (`s3://bucket/prefix` or a local folder):

    asymvae-mirror.json            written first, into an empty prefix: marks it as a mirror asymvae writes
    checkpoints/step-00000500/...  each checkpoint's files, then its COMPLETE marker
    step<N>/vae/..., step<N>/config.yaml, step<N>/COMPLETE     the export, its marker last too
    logs/tensorboard/...           the run's TensorBoard event files, uploaded after the export (when the
                                   trackers have closed them), so a Kubeflow TensorBoard can read them here

A folder counts only when its `COMPLETE` object is there, and that is uploaded last (and deleted first when a
folder is uploaded again), so an upload that was cut never looks complete. The marker records the size and
sha256 of every file (as a local checkpoint's does); a download is checked against it, file by file.

Ownership (asymvae never overwrites or deletes what it did not write): a prefix is used as a mirror only when
it is empty or holds `asymvae-mirror.json`, and every object below it has a place in the layout above (in a
complete folder: a file its marker lists). Pruning deletes a checkpoint's marker, then the files it lists,
and the remains of cut uploads older than the newest complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymvae.storage.base import ObjectInfo, StorageError
from asymvae.storage.factory import open_store
from asymvae.storage.faults import writing
from asymvae.storage.local import publish, staging_dir
from asymvae.training import checkpoint as ckpt

log = logging.getLogger(__name__)

__all__ = ["MIRROR_MARK", "MirrorError", "RunMirror", "fetch_export"]

MIRROR_MARK = "asymvae-mirror.json"
"""The object that marks a prefix as a mirror asymvae writes."""
CHECKPOINTS = "checkpoints"
LOGS = "logs/tensorboard"
"""The run's TensorBoard log dir in the mirror (`OUTPUT/logs/tensorboard` of the run folder)."""
_EXPORT_DIR = re.compile(r"^step(\d+)$")


class MirrorError(StorageError):
    """A mirror that cannot be used (objects asymvae did not write, no complete export, a damaged one)."""


@dataclass(frozen=True)
class Marked:
    """A complete folder in the mirror: its key (`checkpoints/step-00000004`, `step4`), step and `COMPLETE`."""

    key: str
    step: int
    marker: bytes
    files: dict[str, tuple[int, str]]
    """Relative path: (size, sha256), as the marker records them."""


def _folder_of(key: str) -> tuple[str, int, str] | None:
    """(folder key, step, name inside it) of an object in the layout, or None for any other key."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == CHECKPOINTS and (step := ckpt.checkpoint_step(parts[1])) is not None:
        return "/".join(parts[:2]), step, "/".join(parts[2:])
    if len(parts) >= 2 and (found := _EXPORT_DIR.match(parts[0])):
        return parts[0], int(found.group(1)), "/".join(parts[1:])
    return None


def _plain_name(name: Any) -> bool:
    """Whether `name` is a relative path that stays inside its folder (a marker is data from the store)."""
    return isinstance(name, str) and not name.startswith("/") and all(p not in ("", ".", "..") for p in name.split("/"))


def _missing(marked: Marked, sizes: dict[str, int]) -> str | None:
    """Which file of a complete folder is missing from the mirror or of another size there, or None."""
    for name, (size, _) in marked.files.items():
        found = sizes.get(f"{marked.key}/{name}")
        if found != size:
            return f"{name} is {'missing' if found is None else f'{found} bytes, {size} were written'}"
    return None


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class RunMirror:
    """The object store a run's checkpoints and export are mirrored to."""

    def __init__(self, uri: str) -> None:
        self.store = open_store(uri)

    # -- reading the mirror --------------------------------------------------------------------------

    def _complete(self, objects: list[ObjectInfo]) -> dict[str, Marked]:
        """The complete folders among `objects`, by key; one whose marker cannot be read is left out (with a
        warning): it counts as an upload that was cut."""
        found = {}
        for o in objects:
            where = _folder_of(o.key)
            if where is None or where[2] != ckpt.MARKER:
                continue
            key, step, _ = where
            raw = self.store.get(o.key)
            try:
                files = {name: (int(size), str(sha)) for name, (size, sha) in json.loads(raw)["files"].items()}
                if not all(_plain_name(name) for name in files):
                    raise ValueError("a file name leaves the folder")
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                log.warning("%s cannot be read (%s): that folder does not count", self.store.url(o.key), e)
                continue
            found[key] = Marked(key, step, raw, files)
        return found

    def marked(self, export: bool) -> tuple[list[Marked], dict[str, int]]:
        """The complete exports (or checkpoints) in the mirror, oldest first, and the size of every object."""
        objects = self.store.list("" if export else f"{CHECKPOINTS}/")
        if export:
            objects = [o for o in objects if not o.key.startswith(f"{CHECKPOINTS}/")]
        marked = self._complete(objects).values()
        return sorted(marked, key=lambda m: m.step), {o.key: o.size for o in objects}

    def claim(self) -> None:
        """Check that the store can be reached and that its prefix is a mirror asymvae writes (then mark an
        empty one as such); raises a MirrorError naming the first object asymvae did not write."""
        store = self.store
        store.check()
        objects = store.list()
        keys = {o.key for o in objects}
        if MIRROR_MARK in keys:
            try:
                ours = json.loads(store.get(MIRROR_MARK)).get("written_by") == "asymvae"
            except (ValueError, AttributeError):
                ours = False
            if not ours:
                raise self._foreign(MIRROR_MARK)
        elif objects:
            raise self._foreign(objects[0].key)
        complete = self._complete(objects)
        for o in objects:
            if o.key == MIRROR_MARK:
                continue
            where = _folder_of(o.key)
            if where is None and o.key.startswith(f"{LOGS}/") and _plain_name(o.key):
                continue
            if where is None:
                raise self._foreign(o.key)
            marked = complete.get(where[0])
            if marked is not None and where[2] != ckpt.MARKER and where[2] not in marked.files:
                raise self._foreign(o.key)
        if not objects:
            mark = {"written_by": "asymvae", "about": "a training run's checkpoints and export (train.mirror)"}
            store.put(MIRROR_MARK, json.dumps(mark).encode())

    def _foreign(self, key: str) -> MirrorError:
        return MirrorError(
            f"{self.store.url(key)} was not written by asymvae, so {self.store.uri} is not used as train.mirror "
            "(asymvae never overwrites or deletes what it did not write). Fix: move it away, or set train.mirror "
            "to an empty prefix (or one an earlier run mirrored to)."
        )

    # -- uploads -------------------------------------------------------------------------------------

    def _upload(self, key: str, folder: Path, files: dict[str, tuple[int, str]], marker: bytes) -> None:
        """Upload the `files` of `folder` to `key/`, its marker last; an earlier copy stops counting first."""
        store = self.store
        if self._same(key, marker):
            return
        start = time.perf_counter()
        store.delete(f"{key}/{ckpt.MARKER}")
        for name, (size, _) in files.items():
            with (folder / name).open("rb") as f:
                store.put(f"{key}/{name}", f, size)
        store.put(f"{key}/{ckpt.MARKER}", marker)
        total = sum(size for size, _ in files.values())
        log.info("%s mirrored to %s (%s in %.1f s)", folder, store.url(key), _mib(total), time.perf_counter() - start)

    def _same(self, key: str, marker: bytes) -> bool:
        """Whether the mirror holds this very folder already (a complete copy with the same marker)."""
        at = f"{key}/{ckpt.MARKER}"
        return self.store.exists(at) and self.store.get(at) == marker

    def upload_checkpoint(self, folder: Path) -> None:
        """Upload a complete local checkpoint (its files, then its `COMPLETE` marker)."""
        marker = (folder / ckpt.MARKER).read_bytes()
        files = {name: (int(size), sha) for name, (size, sha) in json.loads(marker)["files"].items()}
        self._upload(f"{CHECKPOINTS}/{folder.name}", folder, files, marker)

    def upload_export(self, folder: Path, step: int) -> None:
        """Upload the export `OUTPUT/step<N>` (its files, then a `COMPLETE` marker recording them)."""
        files = {name: (int(size), sha) for name, (size, sha) in ckpt.file_records(folder).items()}
        marker = json.dumps({"step": step, "files": files}, indent=1).encode()
        self._upload(folder.name, folder, files, marker)

    def upload_logs(self, logs: Path) -> None:
        """Upload the run's closed TensorBoard log dir `logs` (`OUTPUT/logs/tensorboard`) to `logs/tensorboard/`,
        each file under its own relative path (files of an earlier upload are replaced by their longer selves)."""
        if not logs.is_dir():
            return
        files = sorted(p for p in logs.rglob("*") if p.is_file())
        for path in files:
            with path.open("rb") as f:
                self.store.put(f"{LOGS}/{path.relative_to(logs).as_posix()}", f, path.stat().st_size)
        log.info("TensorBoard logs mirrored to %s (%d files)", self.store.url(LOGS), len(files))

    def download_logs(self, dest: Path) -> int:
        """Download the mirrored TensorBoard log dir into `dest`; returns how many files there were."""
        found = [o for o in self.store.list(f"{LOGS}/") if _plain_name(o.key)]
        for o in found:
            path = dest / o.key[len(LOGS) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                for chunk in self.store.iter_chunks(o.key):
                    f.write(chunk)
        return len(found)

    def prune(self, keep: int) -> None:
        """Delete all but the newest `keep` complete checkpoints from the mirror (each marker first), and the
        remains of cut uploads older than the newest."""
        marked, sizes = self.marked(export=False)
        for old in marked[:-keep]:
            self.store.delete(f"{old.key}/{ckpt.MARKER}")
            for name in old.files:
                self.store.delete(f"{old.key}/{name}")
        complete = {m.key for m in marked}
        newest = marked[-1].step if marked else -1
        for key in sizes:
            where = _folder_of(key)
            if where is not None and where[0] not in complete and where[1] < newest:
                self.store.delete(key)

    # -- downloads -----------------------------------------------------------------------------------

    def download(self, marked: Marked, final: Path, what: str, keep_marker: bool) -> str | None:
        """Download a complete folder to `final` (through a hidden folder, published whole); what is wrong with
        a file whose bytes do not match its marker, or None."""
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with writing(what, final):
                tmp = staging_dir(final)
                for name, (size, sha256) in marked.files.items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    problem = self.store.download(f"{marked.key}/{name}", tmp / name, sha256, size)
                    if problem is not None:
                        shutil.rmtree(tmp, ignore_errors=True)
                        return f"{name} is {problem}"
                if keep_marker:
                    (tmp / ckpt.MARKER).write_bytes(marked.marker)
                publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return None

    def sync(self, output_dir: Path, keep: int, upload: bool) -> Path | None:
        """Make the newest complete checkpoint of the mirror and of `output_dir` the same, before a resume.

        When the mirror's newest intact one is newer than the local newest, it is downloaded into `output_dir`
        (returned), and the local checkpoints are pruned to the newest `keep`; with `upload`, a local one newer
        than the mirror's newest is uploaded (a run stopped while uploading it). Raises a CheckpointError when
        the mirror's newer checkpoints are all damaged and `output_dir` has none.
        """
        local = ckpt.latest_checkpoint(output_dir)
        local_step = -1 if local is None else int(ckpt.checkpoint_step(local.name) or 0)
        marked, sizes = self.marked(export=False)
        newer = [m for m in marked if m.step > local_step][::-1]
        if upload and local is not None and not newer and ckpt.damage(local) is None:
            self.upload_checkpoint(local)
        skipped = []
        for m in newer:
            final = ckpt.checkpoints_root(output_dir) / m.key.split("/")[1]
            start = time.perf_counter()
            problem = _missing(m, sizes) or self.download(m, final, "a checkpoint", keep_marker=True)
            if problem is None:
                total = sum(size for size, _ in m.files.values())
                log.info(
                    "checkpoint %s downloaded from the mirror %s (%s in %.1f s)",
                    final, self.store.url(m.key), _mib(total), time.perf_counter() - start,
                )  # fmt: skip
                ckpt.prune(output_dir, keep)
                return final
            log.warning("the mirror's checkpoint %s is damaged: %s", self.store.url(m.key), problem)
            skipped.append(f"{m.key}: {problem}")
        if skipped and local is None:
            raise ckpt.CheckpointError(
                f"no checkpoint in the mirror {self.store.uri} is intact ({'; '.join(skipped)}), and "
                f"{ckpt.checkpoints_root(output_dir)} has none. Fix: start anew without --resume (or with another "
                "train.mirror)."
            )
        return None


def fetch_export(mirror: str, dest: Path) -> Path:
    """Download the newest complete export in the mirror `mirror` (`train.mirror` of the run) to
    `dest/step<N>` and return that folder (its `vae/` loads with diffusers), as `output.latest_export` finds
    it in a run folder. Raises a MirrorError when the mirror holds no complete export or a damaged one."""
    run = RunMirror(mirror)
    run.store.check()
    exports, sizes = run.marked(export=True)
    if not exports:
        raise MirrorError(
            f"{run.store.uri} holds no complete export (step<N>/ with its {ckpt.MARKER} marker): the run did not "
            "finish, or it mirrored elsewhere. Fix: check the run's train.mirror and that it ended; run it again "
            "with --resume to export from its last checkpoint."
        )
    newest = exports[-1]
    final = Path(dest) / newest.key
    problem = _missing(newest, sizes) or run.download(newest, final, "the trained model", keep_marker=False)
    if problem is not None:
        raise MirrorError(
            f"the export {run.store.url(newest.key)} in the mirror is damaged: {problem}. Fix: run the training "
            "again with --resume: it exports anew from its last checkpoint."
        )
    log.info("export %s downloaded from the mirror %s", final, run.store.url(newest.key))
    return final
