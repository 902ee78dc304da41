"""Compile the pipeline and its components to YAML. The KFP compiler's output is deterministic, so the
committed `pipelines/asymvae_pipeline.yaml` and `components/<step>/component.yaml` can be checked for staleness."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kfp import compiler

from asymvae.storage.local import write_atomic
from asymvae_components._image import IMAGE
from asymvae_components.deploy.component import deploy
from asymvae_components.evaluate.component import evaluate
from asymvae_components.export.component import export
from asymvae_components.prepare.component import prepare
from asymvae_components.train.component import train
from asymvae_pipelines.asymvae_pipeline import build_pipeline

COMPONENTS: dict[str, Any] = {
    "prepare": prepare,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "deploy": deploy,
}
"""Every component, by step name, in pipeline order (`asymvae_components.STEPS`)."""


def _compile(func: Any, image: str | None) -> str:
    """The compiled YAML of a pipeline or component, with `image` in place of the default image (every step's
    container and the default of the pipeline's `image` parameter, the training job's image)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compiled.yaml"
        compiler.Compiler().compile(func, str(out))
        text = out.read_text()
    return text.replace(IMAGE, image) if image and image != IMAGE else text


def pipeline_yaml(pipeline_root: str | None = None, image: str | None = None, runs_volume: str | None = None) -> str:
    """The compiled pipeline. Without `pipeline_root` none is compiled in, so KFP uses the namespace's default
    artifact root (a root in the YAML is pre-filled by the UI and overrides it); `image` replaces the image of
    every step (and the training job's default); `runs_volume` names a ReadWriteMany PVC for the run folders
    (default: none, checkpoints and the export go through the object store)."""
    return _compile(build_pipeline(pipeline_root or None, runs_volume or None), image)


def compile_pipeline(
    out: str | Path, pipeline_root: str | None = None, image: str | None = None, runs_volume: str | None = None
) -> Path:
    """Compile the pipeline (`pipeline_yaml`) to the file `out`."""
    out = Path(out)
    write_atomic(out, pipeline_yaml(pipeline_root, image, runs_volume).encode())
    return out


def compile_components(out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Compile every component to `out_dir/<step>/component.yaml`, for `load_component_from_file`."""
    written = []
    for step, component in COMPONENTS.items():
        path = Path(out_dir) / step / "component.yaml"
        write_atomic(path, _compile(component, image).encode())
        written.append(path)
    return written
