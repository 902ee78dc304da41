"""Shared fixtures: tiny models (tests/support/tiny_models.py) saved for a session, and a local S3 server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from tests.support.tiny_models import make_base_vae, tiny_config

RUNTIME_FIXTURES = frozenset({"base_vae_dir", "asym_export_dir", "diffusers_export_dir", "s3_server", "s3_env"})
"""Fixtures that bring a real runtime (a saved model to train, evaluate or export; a SeaweedFS server): a test using
one is an integration test."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as `integration` every test that uses a RUNTIME_FIXTURES fixture (others carry the marker themselves:
    a CLI run in a subprocess, a wheel or image build, a training), so that `make test-fast` (`-m "not slow and not
    integration"`) runs the unit tier: the pure logic, in-process. The image tests go last: the image they need
    builds in the background meanwhile (tests/test_image.py)."""
    for item in items:
        if RUNTIME_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_image.py"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the image tests are selected, start building the image now, in the background (tests/test_image.py)."""
    if any(item.nodeid.startswith("tests/test_image.py") for item in session.items):
        from tests.support.container_engines import IMAGE_TAG, EarlyBuild

        EarlyBuild.start(IMAGE_TAG)


@pytest.fixture(scope="session")
def base_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base AutoencoderKL saved like a hub repo: <dir>/vae/config.json."""
    root = tmp_path_factory.mktemp("base_vae")
    make_base_vae().save_pretrained(root / "vae")
    return root


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


@pytest.fixture(scope="session")
def diffusers_export_dir(asym_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as `asymvae export --format diffusers` writes it (what `asymvae serve` and the predictor
    serve)."""
    from asymvae.export.config import ExportConfig
    from asymvae.export.run import export_model

    out = tmp_path_factory.mktemp("diffusers_export") / "hf"
    export_model(ExportConfig(str(asym_export_dir), "diffusers", str(out)))
    return out
