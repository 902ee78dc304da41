"""The whole pipeline through kfp.local (SubprocessRunner, no venv), on the demo photos with a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from asymvae.commands.pipeline import run_local


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_local_produces_every_artifact(tmp_path: Path, base_vae_dir: Path) -> None:
    params = {
        "overrides": [
            f"model.pretrained={base_vae_dir / 'vae'}",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.batch_size=2",
            "data.resolution=32",
            "loss.lpips.weight=0",
        ],
        "prepare_overrides": ["prepare.max_samples=24", "prepare.max_side=128"],
        "runs_dir": str(tmp_path / "runs"),
        "eval_resolution": 32,
        "eval_max_images": 4,
    }
    run_dir, artifacts = run_local(tmp_path / "root", params)
    assert run_dir.parent == tmp_path / "root"
    found = {(a.task, a.output): a for a in artifacts}

    dataset = found["prepare", "dataset"]
    assert (Path(dataset.uri) / "manifest.json").is_file()
    assert dataset.metadata["train_samples"] + dataset.metadata["val_samples"] == 24

    model = found["train", "model"]
    assert (Path(model.uri) / "vae" / "config.json").is_file()
    assert (Path(model.uri) / "baseline" / "vae" / "config.json").is_file()
    assert model.metadata["steps"] == 4 and model.metadata["launcher"] == "local"

    metrics = found["evaluate", "metrics"].metadata
    for decoder in ("baseline", "asymmetric"):
        assert metrics[f"masked/{decoder}/pre_error"] > 0
    assert metrics["pre_error_ratio"] == pytest.approx(
        metrics["masked/asymmetric/pre_error"] / metrics["masked/baseline/pre_error"], rel=1e-6
    )
    html = Path(found["evaluate", "report"].uri).read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    assert "pre_error" in Path(found["evaluate", "table"].uri).read_text()
    assert (Path(found["evaluate", "results"].uri) / "metrics.json").is_file()

    exports = {a.metadata["format"]: Path(a.uri) for (task, _), a in found.items() if task.startswith("export")}
    assert (exports["diffusers"] / "vae" / "config.json").is_file()
    assert (exports["triton"] / "asymvae_decoder" / "config.pbtxt").is_file()
    assert (exports["triton"] / "asymvae_decoder" / "1" / "model.onnx").is_file()
    assert ("deploy", "manifest") not in found  # deploy_model defaults to False
