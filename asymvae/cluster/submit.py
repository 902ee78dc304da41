"""The train step's entry point: one spec, run as a PyTorchJob, a Trainer v2 TrainJob, or in place."""

from __future__ import annotations

from typing import Any

from asymvae.cluster.jobspec import TrainingJobSpec
from asymvae.cluster.local import run_local
from asymvae.cluster.pytorchjob import build_pytorchjob
from asymvae.cluster.trainjob import build_trainjob

BUILDERS = {"trainjob": build_trainjob, "pytorchjob": build_pytorchjob}
"""Cluster launchers: `trainjob` = Kubeflow Trainer v2 TrainJob, `pytorchjob` = training-operator v1 PyTorchJob."""
LAUNCHERS = (*BUILDERS, "local")


def run_training(
    spec: TrainingJobSpec,
    launcher: str = "trainjob",
    policy: Any = None,
    api_client: Any = None,
) -> dict[str, Any]:
    """Train per `spec`; returns a summary (launcher, name, seconds, and for a cluster job its reason).

    `policy` is a runner.WaitPolicy and `api_client` a kubernetes ApiClient (cluster launchers only).
    Raises asymvae.cluster.errors.TrainingJobError subclasses when training does not succeed.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "local":
        return {"launcher": "local", "name": spec.name, "seconds": run_local(spec)}
    from asymvae.cluster.runner import TrainingJobRunner

    outcome = TrainingJobRunner(api_client, policy).run(BUILDERS[launcher](spec))
    return {
        "launcher": launcher,
        "name": outcome.name,
        "namespace": outcome.namespace,
        "seconds": outcome.seconds,
        "reason": outcome.reason,
        "adopted": outcome.adopted,
    }
