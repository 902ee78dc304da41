"""The prepare component's function, called directly with a real Dataset artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Dataset

from asymvae.config import ConfigError
from asymvae_components.prepare.component import prepare


def test_prepares_into_the_artifact(tmp_path: Path) -> None:
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    shards = tmp_path / "shards"
    prepare.python_func(
        dataset=dataset,
        shards=str(shards),
        source="builtin:demo",
        overrides=["prepare.max_samples=12", "prepare.max_side=128"],
    )
    assert shards.read_text() == str(tmp_path / "dataset" / "manifest.json")
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert sum(s["samples"] for s in manifest["shards"]) == 12
    assert dataset.metadata["manifest_uri"] == str(tmp_path / "dataset" / "manifest.json")
    assert dataset.metadata["train_samples"] + dataset.metadata["val_samples"] == 12
    assert dataset.metadata["up_to_date"] is False


def test_bad_override_fails_before_writing(tmp_path: Path) -> None:
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    with pytest.raises(ConfigError, match="unknown config key"):
        prepare.python_func(
            dataset=dataset, shards=str(tmp_path / "shards"), source="builtin:demo", overrides=["prepare.max_sidez=1"]
        )
    assert not (tmp_path / "dataset" / "manifest.json").exists()
