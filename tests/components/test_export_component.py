"""The export component's function: a Triton repository and a diffusers folder, with the eval in the card."""

from __future__ import annotations

import json
from pathlib import Path

from kfp.dsl import Artifact, Model

from asymvae_components.export.component import export


def test_triton_export_is_a_model_repository(tmp_path: Path, asym_export_dir: Path) -> None:
    exported = Model(name="exported", uri=str(tmp_path / "exported"))
    export.python_func(model=Model(name="model", uri=str(asym_export_dir)), exported=exported, format="triton")
    repo = tmp_path / "exported" / "asymvae_decoder"
    assert (repo / "config.pbtxt").is_file() and (repo / "1" / "model.onnx").is_file()
    assert exported.metadata["format"] == "triton"
    assert exported.metadata["storage_uri"] == str(tmp_path / "exported")  # the repository root, for KServe


def test_diffusers_export_carries_the_eval_table(tmp_path: Path, asym_export_dir: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    summary = {
        side: {dec: {"psnr": 20.0, "pre_error": 0.01} for dec in ("baseline", "asymmetric")}
        for side in ("masked", "full_mask")
    }
    summary.update(images=3, data="builtin:demo?seed=1", resolution=32, mask_seed=0, mean_hole_share=0.3)
    summary.update(latents="baseline's encoder", pre_error_ratio=1.0)
    (results / "metrics.json").write_text(json.dumps({"summary": summary, "per_image": []}))
    exported = Model(name="exported", uri=str(tmp_path / "exported"))
    export.python_func(
        model=Model(name="model", uri=str(asym_export_dir)),
        exported=exported,
        results=Artifact(name="results", uri=str(results)),
        format="diffusers",
    )
    assert (tmp_path / "exported" / "vae" / "config.json").is_file()
    assert "pre_error" in (tmp_path / "exported" / "README.md").read_text()
