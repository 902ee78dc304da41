"""Start and schedule runs of the pipeline on a Kubeflow Pipelines server (kfp.Client)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import kfp

from asymvae.config import ConfigError
from asymvae_pipelines.asymvae_pipeline import check_params
from asymvae_pipelines.compiled import compile_pipeline


def _client(host: str) -> Any:
    return kfp.Client(host=host)


def submit(
    host: str,
    params: dict[str, Any],
    experiment: str = "asymvae",
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> Any:
    """Compile and start one run on the KFP API at `host`; returns kfp's RunPipelineResult."""
    check_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "asymvae_pipeline.yaml")
        return _client(host).create_run_from_pipeline_package(
            str(package),
            arguments=params,
            run_name=run_name,
            experiment_name=experiment,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )


def schedule(
    host: str,
    cron: str,
    params: dict[str, Any],
    experiment: str = "asymvae",
    job_name: str = "asymvae-retrain",
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> Any:
    """A recurring run on `cron` (KFP's 6 fields: seconds first), never two at once, no catch-up of missed runs."""
    if len(cron.split()) != 6:
        raise ConfigError(f"--cron {cron!r}: KFP wants 6 fields (seconds minutes hours day month weekday)")
    check_params(params)
    client = _client(host)
    exp = client.create_experiment(name=experiment)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "asymvae_pipeline.yaml")
        return client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=params,
            pipeline_package_path=str(package),
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
