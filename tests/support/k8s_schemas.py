"""The real CRD schemas the manifest tests validate against, kept in the repository (see schemas/README.md)."""

from __future__ import annotations

from pathlib import Path

CRDS = Path(__file__).resolve().parents[1] / "schemas" / "crds"
PYTORCHJOB_CRD = CRDS / "kubeflow.org_pytorchjobs.yaml"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.yaml"
TRAINJOB_V21_CRD = CRDS / "trainer.kubeflow.org_trainjobs-v2.1.0.yaml"
"""Trainer v2.1.0's TrainJob (what Kubeflow 26.03 installs): `podTemplateOverrides`, no `runtimePatches`."""
INFERENCESERVICE_CRD = CRDS / "serving.kserve.io_inferenceservices.yaml"
