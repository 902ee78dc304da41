"""The model card (README.md) that goes with every export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from diffusers import AsymmetricAutoencoderKL

from asymvae.evaluation.report import markdown_table
from asymvae.model.build import VAE

__all__ = ["CardInfo", "find_fingerprint", "model_card", "write_card"]


@dataclass
class CardInfo:
    """What the card says beyond the model itself."""

    name: str
    fmt: str
    source: str
    """Where the exported model was read from."""
    run_config: dict[str, Any] | None = None
    """The training config.yaml beside `vae/`, when present."""
    eval_summary: dict[str, Any] | None = None
    """`summary` of an `asymvae eval` metrics.json, when given."""
    onnx_checks: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _millions(module: Any) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def find_fingerprint(config: dict[str, Any] | None) -> str | None:
    """A data fingerprint recorded anywhere in the training config (a key containing `fingerprint`), or None."""
    if not isinstance(config, dict):
        return None
    for key, value in config.items():
        if "fingerprint" in str(key).lower() and value:
            return str(value)
        found = find_fingerprint(value) if isinstance(value, dict) else None
        if found:
            return found
    return None


def _model_section(vae: VAE, config: dict[str, Any] | None) -> list[str]:
    c = vae.config
    model_cfg = (config or {}).get("model", {}) if isinstance(config, dict) else {}
    base = model_cfg.get("pretrained")
    base_text = f"`{base}`" if base else "not recorded (no training config.yaml beside vae/)"
    if base and model_cfg.get("subfolder") and not str(base).startswith("preset:"):
        base_text += f" (subfolder `{model_cfg['subfolder']}`)"
    lines = ["## Model", "", f"- class: `{type(vae).__name__}`", f"- base model: {base_text}"]
    if isinstance(vae, AsymmetricAutoencoderKL):
        branch = _millions(vae.decoder.condition_encoder)
        lines += [
            f"- decoder: up-block widths {list(c.up_block_out_channels)}, {c.layers_per_up_block} res layers per "
            f"up block; {_millions(vae.decoder)} parameters, of which the mask branch {branch}",
            f"- encoder (frozen, shared with the base): widths {list(c.down_block_out_channels)}, "
            f"{_millions(vae.encoder)} parameters",
        ]
        if model_cfg.get("decoder"):
            lines.append(f"- decoder size preset: `{model_cfg['decoder']}`")
    else:
        lines.append(f"- decoder: widths {list(c.block_out_channels)}, {_millions(vae.decoder)} parameters")
    lines += [f"- latent channels: {c.latent_channels}; scaling factor: {c.scaling_factor}", ""]
    return lines


def _usage(info: CardInfo, vae: VAE) -> list[str]:
    sf = vae.config.scaling_factor
    if info.fmt == "diffusers":
        cls = type(vae).__name__
        return [
            "## Use",
            "",
            "```python",
            f"from diffusers import {cls}",
            f'vae = {cls}.from_pretrained("PATH/TO/THIS/FOLDER", subfolder="vae")',
            "# decode(z, image=..., mask=...): image on [-1, 1] (B, 3, H, W), mask (B, 1, H, W), 1 = hole",
            "```",
            "",
        ]
    where = "`1/model.onnx` (Triton platform `onnxruntime_onnx`)" if info.fmt == "triton" else "`model.onnx`"
    lines = [
        "## Interface",
        "",
        f"The graph in {where} is the mask-conditioned decoder only (float32, NCHW; batch, height and width "
        "are dynamic):",
        "",
        "| tensor | shape | meaning |",
        "|---|---|---|",
        f"| input `latent` | (B, {vae.config.latent_channels}, H/8, W/8) | the latent **scaled** as the diffusion "
        f"model produces it; the graph divides by the scaling factor {sf} itself |",
        "| input `image` | (B, 3, H, W) | the original image on [-1, 1] (pixels in the hole are not read) |",
        "| input `mask` | (B, 1, H, W) | 1 = hole (to generate), 0 = keep; all ones = plain decoding |",
        "| output `sample` | (B, 3, H, W) | decoded image on about [-1, 1] (clamp; not composited) |",
        "",
    ]
    if info.fmt == "triton":
        lines += [
            "Serve it with KServe: an InferenceService with `predictor.model.modelFormat.name: onnx`, "
            "`runtime: kserve-tritonserver` and `storageUri` pointing at the folder that holds this model folder "
            "(the repository root).",
            "",
        ]
    if info.onnx_checks:
        lines += [
            "ONNX check (onnxruntime CPU vs PyTorch, random inputs):",
            "",
            "| batch | latent size | max abs error | max abs output |",
            "|---|---|---|---|",
        ]
        for c in info.onnx_checks:
            lines.append(
                f"| {c['batch']} | {c['latent_height']}x{c['latent_width']} | {c['max_abs_error']:.2e} "
                f"| {c['max_abs_value']:.3f} |"
            )
        lines.append("")
    return lines


def model_card(vae: VAE, info: CardInfo) -> str:
    """The README.md of an export: model, use, data, evaluation, training config."""
    lines = [
        f"# {info.name}",
        "",
        f"An asymmetric VAE decoder trained with asymvae (arXiv 2306.04632), exported as **{info.fmt}** from "
        f"`{info.source}`.",
        "",
    ]
    if info.files:
        lines += ["Files: " + ", ".join(f"`{f}`" for f in info.files), ""]
    lines += _model_section(vae, info.run_config)
    lines += _usage(info, vae)
    data = (info.run_config or {}).get("data", {}) if isinstance(info.run_config, dict) else {}
    fingerprint = find_fingerprint(info.run_config)
    source = f"`{data['source']}`" if data.get("source") else "not recorded"
    if data.get("split") and data.get("resolution"):
        source += f", split `{data['split']}`, {data['resolution']}² crops"
    lines += [
        "## Training data",
        "",
        f"- source: {source}",
        f"- data fingerprint: {f'`{fingerprint}`' if fingerprint else 'not recorded'}",
        "",
        "## Evaluation",
        "",
    ]
    if info.eval_summary:
        lines += [markdown_table(info.eval_summary)]
    else:
        lines += ["Not evaluated with this export (run `asymvae eval`, then export with `--eval metrics.json`).", ""]
    lines += ["## Training config", ""]
    if info.run_config:
        lines += ["```yaml", yaml.safe_dump(info.run_config, sort_keys=False).rstrip(), "```", ""]
    else:
        lines += ["Not recorded (no config.yaml beside vae/).", ""]
    return "\n".join(lines)


def write_card(folder: Path, vae: VAE, info: CardInfo) -> Path:
    """Write README.md into `folder`."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(vae, info))
    return path
