"""The train step's entry point: one spec, run as a Kubeflow PyTorchJob or in place (`launcher=local`)."""

from __future__ import annotations

from typing import Any

from asymvae.cluster.local import run_local
from asymvae.cluster.pytorchjob import PyTorchJobSpec, build_pytorchjob

LAUNCHERS = ("kubeflow", "local")


def run_training(
    spec: PyTorchJobSpec,
    launcher: str = "kubeflow",
    policy: Any = None,
    api_client: Any = None,
) -> dict[str, Any]:
    """Train per `spec`; returns a summary (launcher, name, seconds, and for kubeflow the job's reason).

    `policy` is a runner.WaitPolicy and `api_client` a kubernetes ApiClient (kubeflow launcher only).
    Raises asymvae.cluster.errors.TrainingJobError subclasses when training does not succeed.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "local":
        return {"launcher": "local", "name": spec.name, "seconds": run_local(spec)}
    from asymvae.cluster.runner import PyTorchJobRunner

    outcome = PyTorchJobRunner(api_client, policy).run(build_pytorchjob(spec))
    return {
        "launcher": "kubeflow",
        "name": outcome.name,
        "namespace": outcome.namespace,
        "seconds": outcome.seconds,
        "reason": outcome.reason,
        "adopted": outcome.adopted,
    }
