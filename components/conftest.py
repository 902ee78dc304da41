"""Component tests reuse the tiny models of tests/conftest.py (pytest puts the repository root on sys.path)."""

from tests.conftest import asym_export_dir, base_vae_dir  # noqa: F401 - fixtures
