"""`asymvae pipeline compile|run-local|submit|schedule`: the Kubeflow pipeline (the `asymvae_pipelines` package).

The Kubeflow layer (and kfp) is imported when a pipeline command runs, not when `asymvae` starts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from asymvae.commands.options import Leaf, add_command, from_args, section_values
from asymvae.extras import check_installed
from asymvae_components._image import IMAGE

PARAMS_NOTE = (
    "the pipeline's parameters (`docs/kubeflow.md`); values read as YAML, e.g. --pipeline.nodes 2, "
    "--pipeline.overrides [train.max_steps=50]; those not given keep the pipeline's defaults"
)


def pipeline_leaves() -> list[Leaf]:
    """The pipeline's parameters as `--pipeline.NAME` flags, from its compiled signature (no kfp import)."""
    from asymvae_pipelines.parameters import compiled_parameters

    return [Leaf(f"pipeline.{name}", tp, default, doc) for name, tp, default, doc in compiled_parameters()]


def pipeline_params(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline arguments given on the command line (the others keep the pipeline's defaults)."""
    return {k.removeprefix("pipeline."): v for k, v in section_values(args, "pipeline").items()}


@dataclass
class CompileOptions:
    """`asymvae pipeline compile`."""

    out: str = "asymvae_pipeline.yaml"
    """Where the compiled pipeline goes (upload it in the KFP UI)."""
    components: str | None = None
    """Also write every component to `COMPONENTS/<step>/component.yaml` (for your own pipelines)."""
    pipeline_root: str | None = None
    """Artifact root compiled into the pipeline (default: none, so KFP uses the namespace's own root)."""
    runs_volume: str | None = None
    """A ReadWriteMany PVC in the run's namespace (k8s/runs-volume) that holds the run folders of the train step
    and the training job's pods, mounted at /mnt/runs; default: none, so the run schedules on any cluster and
    checkpoints and the export go through the object store."""
    image: str = IMAGE
    """Container image of every step and of the training job: build docker/Dockerfile, push it to a registry your
    cluster pulls from and name it here (the default is the local tag the documented build gives, which a
    cluster cannot pull)."""


@dataclass
class RunLocalOptions:
    """`asymvae pipeline run-local`."""

    root: str = "work_dirs/pipeline-runs"
    """Artifact root: each run lands in `ROOT/asymvae-<timestamp>/<task>/<output>`."""
    runner: Literal["subprocess", "docker"] = "subprocess"
    """How each step runs: `subprocess` (a process of this Python) or `docker` (a container of `--image` in the
    Docker engine DOCKER_HOST names, exactly as a cluster runs it; docs/cluster.md, "The image")."""
    image: str = IMAGE
    """Image of the steps with `--runner docker` (default: the local tag the documented build gives)."""


@dataclass
class RemoteOptions:
    """Where and how a run starts on a Kubeflow Pipelines server."""

    host: str
    """KFP API endpoint, e.g. http://localhost:8888 through a port forward of the API service."""
    namespace: str | None = None
    """Your profile namespace (required by a multi-user Kubeflow); the run, its experiment and pipeline live there."""
    token: str | None = None
    """Bearer token for the KFP API. `ps` shows it to every user: prefer --token-file (e.g. the output of
    `kubectl create token default-editor -n NAMESPACE --audience pipelines.kubeflow.org` in a file only you
    can read)."""
    token_file: str | None = None
    """File holding a service-account token (default: $KF_PIPELINES_SA_TOKEN_PATH when set, as in a Kubeflow
    notebook); without a token or a file, kfp.Client's own credentials (its context, kubeconfig) are used."""
    experiment: str = "asymvae"
    """Experiment name (created when missing)."""
    pipeline_root: str | None = None
    """Artifact root of the run (default: the namespace's)."""
    runs_volume: str | None = None
    """A ReadWriteMany PVC in the run's namespace (k8s/runs-volume) that holds the run folders of the train step
    and the training job's pods, mounted at /mnt/runs; default: none, so the run schedules on any cluster and
    checkpoints and the export go through the object store."""
    service_account: str | None = None
    """Service account of the run's pods (default: the namespace's, `default-editor` in a profile, with the
    rights k8s/profile grants it); another one needs the same rights plus KFP's own."""
    image: str = field(kw_only=True)
    """Container image of every step and of the training job, as your cluster pulls it (build docker/Dockerfile
    and push it first, e.g. REGISTRY/asymvae:0.1.0)."""

    def connection(self) -> Any:
        """Where and as whom to call KFP."""
        from asymvae_pipelines.remote import Connection

        return Connection(self.host, self.namespace, self.token, self.token_file)


@dataclass
class SubmitOptions(RemoteOptions):
    """`asymvae pipeline submit`."""

    run_name: str | None = None
    """Run name (default: KFP's)."""


@dataclass
class ScheduleOptions(RemoteOptions):
    """`asymvae pipeline schedule`."""

    cron: str = field(kw_only=True)
    """6-field cron, seconds first, e.g. "0 0 3 * * *" (03:00 daily)."""
    name: str = "asymvae-retrain"
    """Recurring run name."""


def _need_kfp() -> None:
    """Stop with one line when kfp (the kubeflow extra) is missing; building `--help` never needs it."""
    check_installed("kfp", "kubeflow", "the Kubeflow pipeline (asymvae pipeline ...)")


def _run_compile(args: argparse.Namespace) -> int:
    _need_kfp()
    from asymvae_pipelines.compiled import compile_components, compile_pipeline

    opts = from_args(CompileOptions, args)
    print(f"Compiled {compile_pipeline(opts.out, opts.pipeline_root, opts.image, opts.runs_volume)}")
    if opts.components:
        for path in compile_components(opts.components, opts.image):
            print(f"Compiled {path}")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    _need_kfp()
    from asymvae_pipelines.local import run_local, summary_lines

    opts = from_args(RunLocalOptions, args)
    start = time.perf_counter()
    run_dir, artifacts = run_local(opts.root, pipeline_params(args), opts.runner, opts.image)
    print("\n" + "\n".join(summary_lines(run_dir, artifacts, time.perf_counter() - start)))
    return 0


def _version_line(registered: Any) -> str:
    state = "uploaded" if registered.uploaded else "already registered"
    return f"pipeline asymvae, version {registered.version_name} ({state})"


def _run_submit(args: argparse.Namespace) -> int:
    _need_kfp()
    from asymvae_pipelines.remote import submit

    o = from_args(SubmitOptions, args)
    params = pipeline_params(args)
    run, registered = submit(
        o.connection(), params, o.image, o.experiment, o.run_name, o.pipeline_root, o.service_account, o.runs_volume
    )
    print(f"Started run {run.run_id} of {_version_line(registered)} in experiment {o.experiment!r} on {o.host}")
    return 0


def _run_schedule(args: argparse.Namespace) -> int:
    _need_kfp()
    from asymvae_pipelines.remote import schedule

    o = from_args(ScheduleOptions, args)
    params = pipeline_params(args)
    job, registered = schedule(
        o.connection(), o.cron, params, o.image, o.experiment, o.name, o.pipeline_root, o.service_account, o.runs_volume
    )
    print(
        f"Scheduled {o.name!r} ({job.recurring_run_id}) of {_version_line(registered)} on {o.cron!r}: "
        "at most one run at a time, no catch-up"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pipeline` to the command line."""
    p = sub.add_parser(
        "pipeline", help="the Kubeflow pipeline: compile, run locally, submit, schedule", allow_abbrev=False
    )
    steps = p.add_subparsers(dest="action", required=True)
    add_command(steps, "compile", CompileOptions, _run_compile, help="compile the pipeline and its components to YAML")
    leaves = pipeline_leaves()
    add_command(
        steps, "run-local", RunLocalOptions, _run_local, sections=iter(leaves), sections_note=PARAMS_NOTE,
        help="run the whole pipeline here with kfp.local (the built-in demo by default)",
    )  # fmt: skip
    add_command(
        steps, "submit", SubmitOptions, _run_submit, sections=iter(leaves), sections_note=PARAMS_NOTE,
        help="start a run on a Kubeflow Pipelines server",
    )  # fmt: skip
    add_command(
        steps, "schedule", ScheduleOptions, _run_schedule, sections=iter(leaves), sections_note=PARAMS_NOTE,
        help="schedule recurring retraining on a Kubeflow Pipelines server",
    )  # fmt: skip
