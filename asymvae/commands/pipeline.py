"""`asymvae pipeline compile|run-local|submit|schedule`: the Kubeflow pipeline (pipelines/asymvae_pipeline.py).

kfp and the pipeline are imported inside the functions: the rest of asymvae never needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymvae.commands.common import add_set_option
from asymvae.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_YAML = REPO_ROOT / "pipelines" / "asymvae_pipeline.yaml"
LOCAL_DEFAULTS = {"launcher": "local", "gpus_per_node": 0, "runs_dir": "work_dirs/pipeline"}
"""run-local trains in the train step's own process: no PyTorchJob, no GPU."""


def _pipeline_module() -> Any:
    """pipelines.asymvae_pipeline, from the checkout this asymvae comes from (components/ and pipelines/ sit
    beside asymvae/; they are not part of the installed package)."""
    if not (REPO_ROOT / "pipelines" / "asymvae_pipeline.py").is_file():
        raise ConfigError(
            f"the pipeline sources are not beside this asymvae ({REPO_ROOT}/pipelines): run from a checkout "
            "of the repository (pip install -e .)"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import pipelines.asymvae_pipeline as module

    return module


def parse_params(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pipeline arguments; a VALUE that parses as JSON (numbers, true/false, lists) is taken as such."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE, e.g. --param nodes=2")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def compile_pipeline(out: str | Path, pipeline_root: str | None = None, image: str | None = None) -> Path:
    """Compile the pipeline to `out` (YAML). `pipeline_root` replaces KFP's default `minio://` root and
    `image` the image of every step (and the PyTorchJob's default); the compiler's output is deterministic."""
    from kfp import compiler

    from asymvae.storage.local import write_atomic

    module = _pipeline_module()
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(module.asymvae_pipeline, str(compiled))
        text = compiled.read_text()
    if pipeline_root and pipeline_root != module.DEFAULT_PIPELINE_ROOT:
        old = f"defaultPipelineRoot: {module.DEFAULT_PIPELINE_ROOT}"
        if old not in text:
            raise RuntimeError(f"the compiled pipeline does not contain {old!r}; cannot set the pipeline root")
        text = text.replace(old, f"defaultPipelineRoot: {pipeline_root}")
    if image and image != module.IMAGE:
        text = text.replace(module.IMAGE, image)
    write_atomic(out, text.encode())
    return out


def _check_params(module: Any, params: dict[str, Any]) -> None:
    import inspect

    known = inspect.signature(module.asymvae_pipeline.pipeline_func).parameters
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _hide_docker_folder() -> None:
    """kfp.local tries `import docker` (the Docker SDK, for its DockerRunner) and carries on without it. From a
    checkout, our `docker/` folder (the Dockerfile) would be imported as a namespace package instead and
    break that; marking the module absent restores the "not installed" path. The real SDK is left alone."""
    import importlib.util

    spec = importlib.util.find_spec("docker") if "docker" not in sys.modules else None
    if spec is not None and spec.origin in (None, "namespace"):
        sys.modules["docker"] = None  # type: ignore[assignment]


@dataclass
class LocalArtifact:
    """One output artifact of a kfp.local run."""

    task: str
    output: str
    uri: str
    metadata: dict[str, Any]


def collect_artifacts(run_dir: Path) -> list[LocalArtifact]:
    """Every output artifact of a kfp.local run folder, from each task's executor_output.json."""
    found = []
    for out_file in sorted(Path(run_dir).glob("*/executor_output.json")):
        data = json.loads(out_file.read_text())
        for output, entry in sorted((data.get("artifacts") or {}).items()):
            for art in entry.get("artifacts", []):
                found.append(LocalArtifact(out_file.parent.name, output, art["uri"], art.get("metadata") or {}))
    return found


def run_local(root: str | Path, params: dict[str, Any]) -> tuple[Path, list[LocalArtifact]]:
    """Run the whole pipeline with kfp.local (each step a subprocess of this Python); returns the run's
    folder and its output artifacts."""
    _hide_docker_folder()
    import kfp.local

    module = _pipeline_module()
    params = {**LOCAL_DEFAULTS, **params}
    _check_params(module, params)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    module.asymvae_pipeline(**params)
    runs = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"the pipeline ran but wrote nothing under {root}")
    return runs[-1], collect_artifacts(runs[-1])


def _client(host: str) -> Any:
    import kfp

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
    _check_params(_pipeline_module(), params)
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
    _check_params(_pipeline_module(), params)
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


# -- command line ---------------------------------------------------------------------------------


def _run_compile(args: argparse.Namespace) -> int:
    out = compile_pipeline(args.out, args.pipeline_root, args.image)
    print(f"Compiled {out}")
    return 0


_LABELS = {
    ("prepare", "dataset"): "prepared dataset",
    ("train", "model"): "trained model",
    ("evaluate", "metrics"): "metrics",
    ("evaluate", "report"): "eval report (HTML)",
    ("evaluate", "table"): "eval table (Markdown)",
    ("evaluate", "results"): "eval files",
    ("export", "exported"): "export (diffusers)",
    ("export-2", "exported"): "export (Triton)",
}


def summary_lines(run_dir: Path, artifacts: list[LocalArtifact], seconds: float) -> list[str]:
    """What run-local prints: each artifact's location in pipeline order, and the pre_error of both decoders."""
    lines = [f"Pipeline finished in {seconds:.0f} s; artifacts under {run_dir}:"]
    order = {key: i for i, key in enumerate(_LABELS)}
    for art in sorted(artifacts, key=lambda a: order.get((a.task, a.output), len(order))):
        label = _LABELS.get((art.task, art.output), f"{art.task}/{art.output}")
        lines.append(f"  {label:<22} {art.uri}")
        if art.output == "metrics":
            m, nan = art.metadata, float("nan")
            base, asym = m.get("masked/baseline/pre_error", nan), m.get("masked/asymmetric/pre_error", nan)
            lines.append(
                f"  {'':<22} pre_error baseline {base:.3e}, asymmetric {asym:.3e} "
                f"(ratio {m.get('pre_error_ratio', nan):.3f})"
            )
    return lines


def _run_local(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    if args.set:
        params["overrides"] = list(params.get("overrides", [])) + list(args.set)
    start = time.perf_counter()
    run_dir, artifacts = run_local(args.root, params)
    print("\n" + "\n".join(summary_lines(run_dir, artifacts, time.perf_counter() - start)))
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    result = submit(
        args.host, parse_params(args.param), args.experiment, args.run_name, args.pipeline_root, args.service_account
    )
    print(f"Started run {result.run_id} in experiment {args.experiment!r} on {args.host}")
    return 0


def _run_schedule(args: argparse.Namespace) -> int:
    job = schedule(
        args.host,
        args.cron,
        parse_params(args.param),
        args.experiment,
        args.name,
        args.pipeline_root,
        args.service_account,
    )
    print(f"Scheduled {args.name!r} ({job.recurring_run_id}) on {args.cron!r}: at most one run at a time, no catch-up")
    return 0


def _remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--experiment", default="asymvae", help="experiment name (created when missing)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")
    p.add_argument("--pipeline-root", help="artifact root (default: the pipeline's minio://mlpipeline/v2/artifacts)")
    p.add_argument("--service-account", help="service account the run's pods use (needs RBAC for PyTorchJobs)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pipeline` to the command line."""
    p = sub.add_parser("pipeline", help="the Kubeflow pipeline: compile, run locally, submit, schedule")
    steps = p.add_subparsers(dest="action", required=True)

    c = steps.add_parser("compile", help="compile the pipeline to YAML")
    c.add_argument("--out", default=str(COMMITTED_YAML), help=f"target file (default: {COMMITTED_YAML})")
    c.add_argument("--pipeline-root", help="artifact root (default: minio://mlpipeline/v2/artifacts)")
    c.add_argument("--image", help="container image of every step (default: components/_image.py)")
    c.set_defaults(func=_run_compile)

    r = steps.add_parser("run-local", help="run the whole pipeline here with kfp.local (the built-in demo by default)")
    r.add_argument("--root", default="work_dirs/pipeline-runs", help="artifact root (default: work_dirs/pipeline-runs)")
    add_set_option(r, example="train.max_steps=50")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")
    r.set_defaults(func=_run_local)

    s = steps.add_parser("submit", help="start a run on a Kubeflow Pipelines server")
    _remote_options(s)
    s.add_argument("--run-name", help="run name (default: KFP's)")
    s.set_defaults(func=_run_submit)

    k = steps.add_parser("schedule", help="schedule recurring retraining on a Kubeflow Pipelines server")
    _remote_options(k)
    k.add_argument("--cron", required=True, help='6-field cron, seconds first, e.g. "0 0 3 * * *" (03:00 daily)')
    k.add_argument("--name", default="asymvae-retrain", help="recurring run name")
    k.set_defaults(func=_run_schedule)
