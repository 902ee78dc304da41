"""Run the whole pipeline here with kfp.local: each step a subprocess of this Python, artifacts in a folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp.local

from asymvae_pipelines.asymvae_pipeline import asymvae_pipeline, check_params

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


def run_local(root: str | Path, params: dict[str, Any]) -> tuple[Path, list[LocalArtifact]]:
    """Run the whole pipeline with kfp.local (each step a subprocess of this Python); returns the run's
    folder and its output artifacts."""
    params = {**LOCAL_DEFAULTS, **params}
    check_params(params)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    asymvae_pipeline(**params)
    runs = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
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
