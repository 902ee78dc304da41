"""Register, start and schedule the pipeline on a Kubeflow Pipelines server (kfp.Client), as a Kubeflow user does.

- Where and as whom: `Connection` names the host, the profile namespace (multi-user KFP refuses work without
  one) and the credentials: a `token`, a service-account token file (the one KF_PIPELINES_SA_TOKEN_PATH names
  inside a cluster), or, with neither, whatever kfp.Client finds itself (its context, kubeconfig, in-cluster).
- What: the pipeline is registered under its name, one version per distinct compiled package (named
  `asymvae-<package version>-<hash>`; an unchanged package reuses its version), so the UI shows one pipeline
  with its history. The first upload creates the pipeline and its first version, which KFP names after the
  pipeline; the pipeline's description records that version's package. Runs and recurring runs point at a
  version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kfp
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, ServiceAccountTokenVolumeCredentials

from asymvae.config import ConfigError
from asymvae_pipelines.asymvae_pipeline import DESCRIPTION, PIPELINE_NAME, check_params
from asymvae_pipelines.compiled import compile_pipeline


@dataclass
class Connection:
    """A KFP API endpoint and who calls it."""

    host: str
    """KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow (in a cluster) or http://localhost:8080."""
    namespace: str | None = None
    """Profile namespace (multi-user KFP); None on a standalone KFP."""
    token: str | None = None
    """A bearer token (e.g. `kubectl create token default-editor -n NAMESPACE --audience pipelines.kubeflow.org`)."""
    token_file: str | None = None
    """A file holding a service-account token, re-read on every request; default: the file
    KF_PIPELINES_SA_TOKEN_PATH names, when set."""

    def client(self) -> Any:
        """A kfp.Client for this connection; ConfigError when multi-user KFP is called without a namespace."""
        token_file = self.token_file or os.environ.get(KF_PIPELINES_SA_TOKEN_ENV)
        kwargs: dict[str, Any] = {"host": self.host}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if self.token:
            kwargs["existing_token"] = self.token
        elif token_file:
            if not Path(token_file).is_file():
                raise ConfigError(
                    f"token file {token_file} does not exist (from --token-file or ${KF_PIPELINES_SA_TOKEN_ENV})"
                )
            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(token_file)
        client = kfp.Client(**kwargs)
        if not self.namespace and client.get_kfp_healthz().multi_user:
            raise ConfigError(
                f"{self.host} is a multi-user Kubeflow Pipelines: pass --namespace (your profile namespace)"
            )
        return client


@dataclass
class Registered:
    """The pipeline and the version a run uses."""

    pipeline_id: str
    version_id: str
    version_name: str
    uploaded: bool
    """False when this package was registered before (its version reused)."""


def _by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": name}]})


def register(
    client: Any, conn: Connection, image: str, pipeline_root: str | None = None, runs_volume: str | None = None
) -> Registered:
    """Upload the pipeline, its steps on `image` (with the PVC `runs_volume` for run folders, if any), under its
    name (first time), else upload this package as a new version of it (unless a version of the same package
    exists). Returns the version to run."""
    with tempfile.TemporaryDirectory(prefix="asymvae-kfp-") as tmp:
        package = compile_pipeline(Path(tmp) / "asymvae_pipeline.yaml", pipeline_root, image, runs_volume)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
        return _register(client, conn, package, f"{PIPELINE_NAME}-{version('asymvae')}-{digest}")


def _register(client: Any, conn: Connection, package: Path, version_name: str) -> Registered:
    found = client.list_pipelines(filter=_by_name(PIPELINE_NAME), namespace=conn.namespace).pipelines or []
    if not found:
        # KFP names the version an upload creates after the pipeline: the description records which package it is.
        description = f"{DESCRIPTION} First version: {version_name}."
        pipeline = client.upload_pipeline(str(package), PIPELINE_NAME, description, namespace=conn.namespace)
        (first,) = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions
        return Registered(pipeline.pipeline_id, first.pipeline_version_id, version_name, True)
    pipeline = found[0]
    name = PIPELINE_NAME if f"First version: {version_name}." in (pipeline.description or "") else version_name
    same = client.list_pipeline_versions(pipeline.pipeline_id, filter=_by_name(name)).pipeline_versions or []
    if same:
        return Registered(pipeline.pipeline_id, same[0].pipeline_version_id, version_name, False)
    made = client.upload_pipeline_version(
        str(package), version_name, pipeline_id=pipeline.pipeline_id, description=DESCRIPTION
    )
    return Registered(pipeline.pipeline_id, made.pipeline_version_id, version_name, True)


def submit(
    conn: Connection,
    params: dict[str, Any],
    image: str,
    experiment: str = "asymvae",
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    runs_volume: str | None = None,
) -> tuple[Any, Registered]:
    """Register the pipeline (version) with its steps on `image` and start one run of it; returns the run and
    the version used."""
    check_params(params)
    client = conn.client()
    registered = register(client, conn, image, pipeline_root, runs_volume)
    exp = client.create_experiment(name=experiment, namespace=conn.namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        params=params,
        pipeline_id=registered.pipeline_id,
        version_id=registered.version_id,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return run, registered


def schedule(
    conn: Connection,
    cron: str,
    params: dict[str, Any],
    image: str,
    experiment: str = "asymvae",
    job_name: str = "asymvae-retrain",
    pipeline_root: str | None = None,
    service_account: str | None = None,
    runs_volume: str | None = None,
) -> tuple[Any, Registered]:
    """A recurring run of the registered version (steps on `image`) on `cron` (KFP's 6 fields: seconds first),
    never two at once, no catch-up of missed runs."""
    if len(cron.split()) != 6:
        raise ConfigError(f"--cron {cron!r}: KFP wants 6 fields (seconds minutes hours day month weekday)")
    check_params(params)
    client = conn.client()
    registered = register(client, conn, image, pipeline_root, runs_volume)
    exp = client.create_experiment(name=experiment, namespace=conn.namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=job_name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=registered.pipeline_id,
        version_id=registered.version_id,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return job, registered
