"""Run the whole pipeline here with kfp.local, from its compiled YAML: the same container commands a cluster runs,
each step a subprocess of this Python (`subprocess`) or a container of the project's image in a Docker engine
(`docker`); artifacts land in a folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp.local
from kfp import components

from asymvae.config import ConfigError
from asymvae.extras import require
from asymvae.storage.s3 import ENV_NAMES
from asymvae_components._image import IMAGE
from asymvae_pipelines.asymvae_pipeline import PIPELINE_NAME, check_params
from asymvae_pipelines.compiled import pipeline_yaml

RUNNERS = ("subprocess", "docker")
"""How kfp.local runs each step: a subprocess of this Python, or a container of the image."""

FORWARDED_ENV = (
    *(name for name in ENV_NAMES if name != "AWS_CA_BUNDLE"),
    *("HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "ASYMVAE_LOG_LEVEL"),
)
"""Environment variables a container step gets from this environment when set (object store, hub access, log
level). `AWS_CA_BUNDLE` names a file of this machine and stays behind: bake a private CA into the image."""

LOCAL_DEFAULTS = {"launcher": "local", "gpus_per_node": 0, "runs_dir": "work_dirs/pipeline", "s3_endpoint": ""}
"""run-local trains in the train step's own process (no cluster job, no GPU) and leaves the object-store
endpoint to this environment (S3_ENDPOINT, if any) instead of the cluster's."""


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


def docker_runner(root: Path, image: str) -> kfp.local.DockerRunner:
    """kfp.local's DockerRunner as run-local uses it: the host's network (the object store and other servers as
    this machine sees them, 127.0.0.1 included), your UID so that the artifacts under `root` are yours (with
    group 0, which owns the image's home folder), `root` as the working folder (relative paths such as
    `work_dirs/...` land beside the artifacts instead of inside a container), a 2 GiB `/dev/shm` for data-loader
    workers (Docker's default is 64 MiB), and the store's settings from this environment.

    ConfigError when no Docker engine answers or it lacks `image`, before any step starts."""
    docker = require("docker", "kubeflow", "asymvae pipeline run-local --runner docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise ConfigError(
            f"--runner docker: no Docker engine answers ({e}). Start one (or set DOCKER_HOST to its socket), "
            "or run the steps as subprocesses with --runner subprocess."
        ) from e
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as e:
        raise ConfigError(
            f"--runner docker: the Docker engine has no image {image}. Build it: "
            f"docker build -f docker/Dockerfile -t {image} .  (or name another with --image)"
        ) from e
    finally:
        client.close()
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    return kfp.local.DockerRunner(
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        group_add=["0"],
        working_dir=str(root),
        shm_size="2g",
        environment=env,
    )


def run_local(
    root: str | Path, params: dict[str, Any], runner: str = "subprocess", image: str = IMAGE
) -> tuple[Path, list[LocalArtifact]]:
    """Run the compiled pipeline (steps on `image`) with kfp.local and `runner` (one of RUNNERS); returns the
    run's folder and its output artifacts."""
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    params = {**LOCAL_DEFAULTS, "image": image, **params}
    check_params(params)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    pipeline = components.load_component_from_text(pipeline_yaml(image=image))
    local_runner = docker_runner(root, image) if runner == "docker" else kfp.local.SubprocessRunner(use_venv=False)
    before = {p.name for p in root.iterdir()}
    kfp.local.init(runner=local_runner, pipeline_root=str(root))
    pipeline(**params)
    new = (p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{PIPELINE_NAME}-") and p.name not in before)
    runs = sorted(new, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"the pipeline ran but wrote nothing under {root}")
    return runs[-1], collect_artifacts(runs[-1])


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
