"""Resumable checkpoints that count only when complete.

A checkpoint is written to a hidden temporary folder and renamed to `checkpoints/step-00000100` only
after every file (and the `COMPLETE` marker) is on disk, so a run killed mid-save leaves nothing that
looks like a checkpoint; resume picks the newest complete one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def checkpoints_root(output_dir: Path) -> Path:
    """The folder holding a run's checkpoints."""
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after `step` optimizer steps."""
    return f"step-{step:08d}"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def write_marker(folder: Path, info: dict[str, Any]) -> None:
    """Mark a checkpoint folder complete (last write before it is published)."""
    (folder / MARKER).write_text(json.dumps(info, indent=1))


def prune(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale temporary folders."""
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    root = checkpoints_root(output_dir)
    for stale in root.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
