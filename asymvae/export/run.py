"""`asymvae export`: one trained model to a diffusers folder, an ONNX file or a Triton model, atomically.

Everything is written into a hidden temporary folder beside the target, checked (ONNX parity, Triton
config), given its model card last, and only then renamed to the target. Any failure removes the
temporary folder, so a target that exists is always complete; one that a killed export (SIGTERM, SIGKILL)
left is removed by the next export to the same target on the same host.

Targets: `--format diffusers` and `onnx` write `OUT/` itself; `--format triton` writes the model folder
`OUT/<name>/` inside the repository root `OUT/` (other models already there are left alone).
With `--eval`, the export also carries evaluation.json (asymvae.export.evaluation), written in the temporary
folder with the rest: for triton inside the model folder, the part that is published atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from diffusers import AsymmetricAutoencoderKL

from asymvae.data.provenance import PROVENANCE_NAME
from asymvae.export import ExportError
from asymvae.export.card import CardInfo, write_card
from asymvae.export.config import ExportConfig
from asymvae.export.evaluation import EVALUATION_NAME, evaluation_record
from asymvae.export.onnx import export_onnx, verify_onnx
from asymvae.export.triton import triton_config, validate_triton_model
from asymvae.extras import require
from asymvae.model.build import VAE
from asymvae.model.files import load_vae, read_provenance, read_run_config, save_vae
from asymvae.progress import phase
from asymvae.storage.faults import writing
from asymvae.storage.local import check_replaceable, private_staging_dir, publish
from asymvae.storage.ownership import own_target

log = logging.getLogger(__name__)

__all__ = ["ExportConfig", "ExportResult", "export_model"]


@dataclass
class ExportResult:
    """Where the export went and what was checked."""

    path: Path
    files: list[str]
    onnx_checks: list[dict[str, Any]] = field(default_factory=list)


def _read_eval(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"--eval {p}: no such file (give the metrics.json that `asymvae eval` wrote)")
    try:
        summary = json.loads(p.read_text())["summary"]
        if not all("pre_error" in summary["masked"][d] for d in ("baseline", "asymmetric")):
            raise KeyError("pre_error")
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"--eval {p} is not a metrics.json written by `asymvae eval` ({e!r})") from e
    return summary


def _write_onnx(vae: VAE, path: Path, opset: int) -> list[dict[str, Any]]:
    if not isinstance(vae, AsymmetricAutoencoderKL):
        raise ExportError(
            f"--format onnx/triton exports the mask-conditioned decoder of an AsymmetricAutoencoderKL; "
            f"this model is a {type(vae).__name__} (use --format diffusers for it)"
        )
    with phase(f"exporting the mask-conditioned decoder to ONNX (opset {opset})", log):
        export_onnx(vae, path, opset)
    with phase("checking the ONNX graph against PyTorch with onnxruntime", log):
        checks = [c.as_dict() for c in verify_onnx(vae, path)]
    worst = max(c["max_abs_error"] for c in checks)
    scale = max(1.0, max(c["max_abs_value"] for c in checks))
    if worst > 1e-3 * scale:
        raise ExportError(f"the ONNX graph disagrees with PyTorch by up to {worst:.3g}: not exporting it")
    return checks


def _fill(
    cfg: ExportConfig, vae: VAE, tmp: Path, run_config: dict[str, Any] | None, record: dict[str, Any] | None
) -> tuple[list[str], list]:
    """Write the format's files into `tmp`; return (relative file names, ONNX checks)."""
    checks: list[dict[str, Any]] = []
    if cfg.format == "diffusers":
        with phase("writing the diffusers folder", log):
            save_vae(vae, tmp)
    elif cfg.format == "onnx":
        checks = _write_onnx(vae, tmp / "model.onnx", cfg.opset)
    else:
        (tmp / "1").mkdir()
        checks = _write_onnx(vae, tmp / "1" / "model.onnx", cfg.opset)
        onnx = require("onnx", "export", "asymvae export --format triton")
        graph = onnx.load(str(tmp / "1" / "model.onnx"), load_external_data=False)
        # Named after the target folder, which is what Triton requires of config.name.
        (tmp / "config.pbtxt").write_text(triton_config(cfg.name, graph, cfg.max_batch_size))
        try:
            validate_triton_model(tmp, name=cfg.name)
        except ValueError as e:
            raise ExportError(str(e)) from e
    if run_config is not None and cfg.format != "triton":
        (tmp / "config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))
    if record is not None and cfg.format != "triton":
        (tmp / PROVENANCE_NAME).write_text(json.dumps(record, indent=1) + "\n")
    if checks:
        (tmp / "export_report.json").write_text(json.dumps({"onnx_parity": checks}, indent=1) + "\n")
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return files, checks


def export_model(cfg: ExportConfig) -> ExportResult:
    """Export `cfg.model` as `cfg.format` to `cfg.target`, atomically (see the module docstring)."""
    target = cfg.target
    if target.exists() and not cfg.force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    check_replaceable(target)  # --force replaces an earlier export, never a folder asymvae did not write
    if cfg.format != "diffusers":  # before any work: these come with the export extra
        triton = ("tritonclient.grpc.model_config_pb2",) if cfg.format == "triton" else ()
        for module in ("onnx", "onnxruntime", *triton):
            require(module, "export", f"asymvae export --format {cfg.format}")
    with own_target(target, f"asymvae export {cfg.model}"):  # one export at a time into a target
        return _export(cfg, target)


def _export(cfg: ExportConfig, target: Path) -> ExportResult:
    eval_summary = _read_eval(cfg.eval)
    with phase(f"loading the model from {cfg.model}", log):
        vae = load_vae(cfg.model).float()
    run_config = read_run_config(cfg.model)
    record = read_provenance(cfg.model)
    tmp: Path | None = None
    try:
        with writing("the export", target):  # a full disk or a folder it may not write to: one line, nothing left
            tmp = private_staging_dir(target)  # also removes what a killed export left here
            files, checks = _fill(cfg, vae, tmp, run_config, record)
            if eval_summary is not None:  # for the deploy gate (asymvae.serving.gate), beside the card
                (tmp / EVALUATION_NAME).write_text(json.dumps(evaluation_record(eval_summary), indent=1) + "\n")
                files.append(EVALUATION_NAME)
            files.append("README.md")
            info = CardInfo(cfg.name, cfg.format, str(cfg.model), run_config, record, eval_summary, checks, files)
            write_card(tmp, vae, info)  # last: a folder with its card is complete
            publish(tmp, target)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s as %s to %s", cfg.model, cfg.format, target)
    return ExportResult(target, info.files, checks)
