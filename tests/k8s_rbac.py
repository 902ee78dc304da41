"""The rights k8s/rbac gives a pipeline run's account, for the API stand-in to enforce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RUN_ROLE = Path(__file__).resolve().parents[1] / "k8s" / "rbac" / "role.yaml"


def run_role_rules() -> list[dict[str, Any]]:
    """The rules of the Role `asymvae-run` (k8s/rbac/role.yaml)."""
    return yaml.safe_load(RUN_ROLE.read_text())["rules"]
