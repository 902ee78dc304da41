"""A training run's final model: `OUTPUT/step<N>/vae` (diffusers safetensors + config.json), written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from asymvae.data.provenance import PROVENANCE_NAME
from asymvae.model.build import VAE
from asymvae.model.files import save_vae
from asymvae.storage.faults import writing
from asymvae.storage.local import publish, staging_dir

__all__ = ["export_dir", "latest_export", "write_export"]


def export_dir(output_dir: Path, step: int) -> Path:
    """`OUTPUT/step<N>`: the folder whose `vae/` subfolder diffusers loads."""
    return Path(output_dir) / f"step{step}"


def latest_export(output_dir: Path) -> Path | None:
    """The export with the most steps under `output_dir`, or None."""
    found = [
        p for p in Path(output_dir).glob("step*") if p.name[4:].isdigit() and (p / "vae" / "config.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name[4:])) if found else None


def write_export(vae: VAE, output_dir: Path, step: int, config_yaml: str, provenance: dict[str, Any]) -> Path:
    """Save `vae` to `OUTPUT/step<N>/vae` (safetensors + config) with the run's config and `provenance` (what it
    was trained from: asymvae.data.provenance) beside it.

    Written to a hidden folder and renamed when complete: a crash leaves no half-written `step<N>`.
    Call on one process only.
    """
    final = export_dir(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        with writing("the trained model", final):
            tmp = staging_dir(final)
            save_vae(vae, tmp)
            (tmp / "config.yaml").write_text(config_yaml)
            (tmp / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=1) + "\n")
            publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
