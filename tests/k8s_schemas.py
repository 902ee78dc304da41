"""Where the real CRD schemas live (../shared/schemas from the project root, in CI and developer checkouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT.parent / "shared" / "schemas" / "crds"
PYTORCHJOB_CRD = CRDS / "kubeflow.org_pytorchjobs.yaml"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.yaml"
INFERENCESERVICE_CRD = CRDS / "serving.kserve.io_inferenceservices.yaml"

needs_crds = pytest.mark.skipif(
    not PYTORCHJOB_CRD.is_file(),
    reason=f"the real CRD schemas are not at {CRDS} (they are in CI and developer checkouts, not in a user's clone)",
)
