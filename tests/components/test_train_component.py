"""The train component's function with launcher=local on real prepared shards; where shards are read from."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp.dsl import Dataset, Markdown, Model

from asymvae.steps.train import TrainStepConfig
from asymvae.steps.uris import job_name, shards_uri, store_uri
from asymvae_components.prepare.component import prepare
from asymvae_components.train.component import train


def test_trains_in_place_and_fills_the_model_artifact(tmp_path: Path, base_vae_dir: Path) -> None:
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    shards = tmp_path / "shards.txt"
    prepare.python_func(
        dataset=dataset, shards=str(shards), source="builtin:demo", overrides=["prepare.max_samples=16"]
    )
    assert shards.read_text() == str(tmp_path / "dataset" / "manifest.json")
    model = Model(name="model", uri=str(tmp_path / "model"))
    page = Markdown(name="tensorboard", uri=str(tmp_path / "tensorboard.md"))
    train.python_func(
        shards=shards.read_text(),
        model=model,
        tensorboard=page,
        config="demo",
        overrides=[
            f"model.pretrained={base_vae_dir / 'vae'}",
            "train.max_steps=2",
            "train.batch_size=2",
            "data.resolution=32",
            "loss.lpips.weight=0",
        ],
        launcher="local",
        runs_dir=str(tmp_path / "runs"),
    )
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    assert (tmp_path / "model" / "config.yaml").read_text().count(str(tmp_path / "dataset" / "manifest.json")) == 1
    assert (tmp_path / "model" / "baseline" / "vae" / "config.json").is_file()
    assert model.metadata["steps"] == 2 and model.metadata["baseline"] == "baseline"
    assert model.metadata["job"] == job_name("asymvae-train", str(tmp_path / "model"))
    # the run's TensorBoard logs travel in the model artifact; the page says how to open them in Kubeflow
    assert model.metadata["tensorboard"] == "tensorboard"
    assert list((tmp_path / "model" / "tensorboard" / "demo").glob("events.out.tfevents.*"))
    text = Path(page.path).read_text()
    assert "apiVersion: tensorboard.kubeflow.org/v1alpha1" in text and "kind: Tensorboard" in text
    assert f"logspath: {tmp_path / 'model'}/tensorboard" in text


def test_shards_uri() -> None:
    art = "minio://mlpipeline/v2/artifacts/asymvae/run-1/prepare/dataset"
    # a dataset in prepare's artifact is read from the artifact store by everyone after prepare
    assert shards_uri("/minio/x/manifest.json", art) == (
        "s3://mlpipeline/v2/artifacts/asymvae/run-1/prepare/dataset/manifest.json"
    )
    assert shards_uri("s3://data/demo/manifest.json", art) == "s3://data/demo/manifest.json"
    assert shards_uri("/runs/x/manifest.json", "/runs/x") == "/runs/x/manifest.json"  # kfp.local
    assert store_uri("/local/path") == "/local/path"


def test_job_name_is_stable_per_artifact_and_a_dns_label() -> None:
    a, b = job_name("asymvae-train", "minio://b/run-1/model"), job_name("asymvae-train", "minio://b/run-2/model")
    assert a == job_name("asymvae-train", "minio://b/run-1/model") and a != b
    assert len(a) <= 52 and a.replace("-", "").isalnum()


def test_step_config_checks() -> None:
    with pytest.raises(ValueError, match="needs the image"):
        TrainStepConfig(launcher="pytorchjob").job_image()
    assert TrainStepConfig(launcher="local").job_image() == "local"
    with pytest.raises(ValueError, match="one node"):
        TrainStepConfig(launcher="local", nodes=2)
