"""Kubeflow Pipelines components of asymvae (installed as `asymvae_components`).

One folder per step: `component.py` (a lightweight Python component whose body calls the `asymvae` library),
its compiled `component.yaml` (for `kfp.components.load_component_from_file` in your own pipelines) and a
README. `asymvae pipeline compile --components DIR --image REGISTRY/asymvae:TAG` writes them for your image.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

STEPS = ("prepare", "train", "evaluate", "export", "deploy")
"""The components, in pipeline order; each is `asymvae_components.<step>.component.<step>`."""


def component_file(step: str) -> Path:
    """The installed, compiled `component.yaml` of `step` (for `kfp.components.load_component_from_file`)."""
    if step not in STEPS:
        raise ValueError(f"no component {step!r}; components: {', '.join(STEPS)}")
    return Path(str(files(__name__) / step / "component.yaml"))
