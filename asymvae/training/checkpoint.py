"""Resumable checkpoints that count only when complete, and that verify themselves.

A checkpoint is written to a hidden temporary folder and renamed to `checkpoints/step-00000100` only
after every file (and the `COMPLETE` marker) is on disk, so a run killed mid-save leaves nothing that
looks like a checkpoint. The marker records the size and sha256 of every file, so `damage()` finds a
file truncated or changed later; resume takes the newest complete checkpoint that is intact.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from asymvae.errors import UserError
from asymvae.storage.local import WRITTEN_BY

MARKER = "COMPLETE"
RESUMES_NAME = "resumes.jsonl"
"""`OUTPUT/logs/resumes.jsonl`: one row per resume, with every config key changed since the checkpoint."""
# Model keys that change only how the same weights are trained, not which weights there are.
_TRAINING_ONLY = {"model.sample_posterior", "model.gradient_checkpointing"}
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be resumed from (missing, incomplete or damaged); the message says which."""


def checkpoints_root(output_dir: Path) -> Path:
    """The folder holding a run's checkpoints."""
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after `step` optimizer steps."""
    return f"step-{step:08d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder named `name` (`step-00000100`: 100), or None for another name."""
    found = _STEP_DIR.match(name)
    return int(found.group(1)) if found else None


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p.name) is not None and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: checkpoint_step(p.name))  # type: ignore[arg-type,return-value]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def sha256_of(path: Path) -> str:
    """The sha256 of a file, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder: Path) -> dict[str, list[Any]]:
    """`{relative path: [size, sha256]}` of every file in `folder` but its `COMPLETE` marker and asymvae's
    `.asymvae-written` mark."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MARKER, WRITTEN_BY))
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, sha256_of(p)] for p in files}


def write_marker(folder: Path, info: dict[str, Any]) -> None:
    """Mark a checkpoint folder complete (last write before it is published), recording `info` and the size
    and sha256 of every file in it."""
    (folder / MARKER).write_text(json.dumps({**info, "files": file_records(folder)}, indent=1))


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint (each file missing, truncated or changed since it was
    written), or None when it is intact. Checkpoints from before checksums were recorded have only their
    marker read."""
    try:
        files = json.loads((folder / MARKER).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError) as e:
        return f"its {MARKER} marker cannot be read ({e})"
    problems = []
    for name, (size, sha256) in files.items():
        path = folder / name
        try:
            found = path.stat().st_size
        except OSError as e:
            problems.append(f"{name} cannot be read ({e.strerror})")
            continue
        if found != size:
            problems.append(f"{name} is {found} bytes, {size} were written (truncated or overwritten)")
        elif sha256_of(path) != sha256:
            problems.append(f"{name} changed since it was written (its sha256 differs)")
    return "; ".join(problems) or None


def describe(output_dir: Path) -> str:
    """The complete checkpoints of a run, for messages."""
    found = complete_checkpoints(output_dir)
    where = checkpoints_root(output_dir)
    return f"{where} has " + (", ".join(p.name for p in found) if found else "no complete checkpoint")


def prune(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale temporary folders."""
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    root = checkpoints_root(output_dir)
    for stale in root.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def config_changes(folder: Path, config_yaml: str) -> dict[str, tuple[Any, Any]]:
    """Every config key whose value differs between the checkpoint's `config.yaml` and `config_yaml`, as
    (there, here); empty when the checkpoint has no config.yaml."""
    try:
        there = _flat(yaml.safe_load((folder / "config.yaml").read_text()))
    except FileNotFoundError:
        return {}
    here = _flat(yaml.safe_load(config_yaml))
    return {k: (there.get(k), here.get(k)) for k in sorted(there.keys() | here.keys()) if there.get(k) != here.get(k)}


def refuse_another_model(folder: Path, changes: dict[str, tuple[Any, Any]]) -> None:
    """Raise a CheckpointError naming the checkpoint as made for another model when a `model.` key that
    decides the weights changed."""
    model = {k: v for k, v in changes.items() if k.startswith("model.") and k not in _TRAINING_ONLY}
    if model:
        shown = ", ".join(f"{k}={there!r} there, {here!r} here" for k, (there, here) in model.items())
        raise CheckpointError(
            f"checkpoint {folder} was made for another model ({shown}). Fix: resume with the model it was made "
            "with (its config.yaml), or start a new run (another --output)."
        )


def record_resume(output_dir: Path, folder: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Append to `OUTPUT/logs/resumes.jsonl` which checkpoint the run resumed from, at which step, with
    which config keys changed since it was written (there, here)."""
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(folder), "step": step,
           "changes": {k: list(v) for k, v in changes.items()}}  # fmt: skip
    path = Path(output_dir) / "logs" / RESUMES_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
