"""Shared fixtures: tiny models and configs that train in seconds on a 2-core CPU, fully offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from asymvae.config import apply_overrides
from asymvae.data.config import DataConfig
from asymvae.losses.config import LossConfig, LPIPSConfig
from asymvae.masks import MaskConfig
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig
from asymvae.training.experiment import ExperimentConfig


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The image tests last: the image they need builds in the background meanwhile (tests/test_image.py)."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_image.py"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the image tests are selected, start building the image now, in the background (tests/test_image.py)."""
    if any(item.nodeid.startswith("tests/test_image.py") for item in session.items):
        from tests.container_engines import IMAGE_TAG, EarlyBuild

        EarlyBuild.start(IMAGE_TAG)


# Four levels (8x), as SD: AsymmetricAutoencoderKL's mask branch assumes that depth.
TINY_BASE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
)


def make_base_vae(seed: int = 0):
    """A tiny random AutoencoderKL."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_BASE)


def family_base(name: str, seed: int = 0, **extra):
    """A tiny random AutoencoderKL with the latent interface of VAE family `name` (sd, sdxl, sd3, flux)."""
    import torch
    from diffusers import AutoencoderKL

    from asymvae.model.family import FAMILIES

    torch.manual_seed(seed)
    return AutoencoderKL(**{**TINY_BASE, **FAMILIES[name].vae_kwargs(), **extra})


@pytest.fixture(scope="session")
def base_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base AutoencoderKL saved like a hub repo: <dir>/vae/config.json."""
    root = tmp_path_factory.mktemp("base_vae")
    make_base_vae().save_pretrained(root / "vae")
    return root


def tiny_config(base_vae_dir: Path, output: Path, *overrides: str) -> ExperimentConfig:
    """An asymmetric run on the demo photos at 32², batch 2, no LPIPS: a step takes ~0.1 s."""
    cfg = ExperimentConfig(
        name="tiny",
        model=ModelConfig(kind="asymmetric", pretrained=str(base_vae_dir), decoder="base"),
        data=DataConfig(source="builtin:demo", resolution=32, num_workers=0, max_samples=16),
        masks=MaskConfig(full_mask_prob=0.5),
        loss=LossConfig(pixel="l1", lpips=LPIPSConfig(weight=0.0)),
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        train=TrainConfig(
            max_steps=4,
            batch_size=2,
            mixed_precision="no",
            checkpoint_every=2,
            log_every=1,
            output_dir=str(output),
            progress=False,
        ),
    )
    return apply_overrides(cfg, list(overrides))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedFS S3 server on loopback (started once per session, killed at the end) with bucket `asymvae`."""
    from asymvae.storage.local_s3 import LocalS3Server

    server = LocalS3Server(tmp_path_factory.mktemp("s3")).start()
    server.make_bucket("asymvae")
    yield server
    server.stop(grace=1.0)


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):
    """The environment pointing asymvae at `s3_server` (credentials, endpoint, no TLS, quick retries)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ASYMVAE_S3_RETRIES", "1")
    return s3_server


@pytest.fixture(scope="session")
def asym_export_dir(base_vae_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained AsymmetricAutoencoderKL on the base VAE's encoder, laid out like a training export:
    <dir>/vae/ plus the run's config.yaml beside it. Its mask branch is random, so it is no better than the base."""
    import yaml
    from diffusers import AutoencoderKL

    from asymvae.config import to_dict
    from asymvae.model.build import asymmetric_from_base

    root = tmp_path_factory.mktemp("asym_export") / "step0"
    cfg = tiny_config(base_vae_dir, root.parent)
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae")
    vae = asymmetric_from_base(base, cfg.model)
    vae.save_pretrained(root / "vae")
    (root / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return root
