"""Compile the pipeline and its components to YAML. The KFP compiler's output is deterministic, so the
committed `pipelines/asymvae_pipeline.yaml` and `components/<step>/component.yaml` can be checked for staleness."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

from kfp import compiler

from asymvae.storage.local import write_atomic
from asymvae_components import STEPS
from asymvae_components._image import IMAGE
from asymvae_pipelines.asymvae_pipeline import DEFAULT_PIPELINE_ROOT, asymvae_pipeline

COMPONENTS: dict[str, Any] = {
    step: getattr(importlib.import_module(f"asymvae_components.{step}.component"), step) for step in STEPS
}
"""Every component, by step name (`asymvae_components.<step>.component.<step>`)."""


def _compile(func: Any, image: str | None) -> str:
    """The compiled YAML of a pipeline or component, with `image` in place of the default image."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compiled.yaml"
        compiler.Compiler().compile(func, str(out))
        text = out.read_text()
    return text.replace(IMAGE, image) if image and image != IMAGE else text


def compile_pipeline(out: str | Path, pipeline_root: str | None = None, image: str | None = None) -> Path:
    """Compile the pipeline to `out` (YAML). `pipeline_root` replaces the default artifact root and `image`
    the image of every step (and the training job's default)."""
    text = _compile(asymvae_pipeline, image)
    if pipeline_root and pipeline_root != DEFAULT_PIPELINE_ROOT:
        old = f"defaultPipelineRoot: {DEFAULT_PIPELINE_ROOT}"
        if old not in text:
            raise RuntimeError(f"the compiled pipeline does not contain {old!r}; cannot set the pipeline root")
        text = text.replace(old, f"defaultPipelineRoot: {pipeline_root}")
    out = Path(out)
    write_atomic(out, text.encode())
    return out


def compile_components(out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Compile every component to `out_dir/<step>/component.yaml`, for `load_component_from_file`."""
    written = []
    for step, component in COMPONENTS.items():
        path = Path(out_dir) / step / "component.yaml"
        write_atomic(path, _compile(component, image).encode())
        written.append(path)
    return written
