"""The trainer's export, kept importable here; it lives in `asymvae.export.diffusers`."""

from asymvae.export.diffusers import export_diffusers, export_dir, latest_export

__all__ = ["export_diffusers", "export_dir", "latest_export"]
