"""The model card (README.md) that goes with every export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from diffusers import AsymmetricAutoencoderKL

from asymvae.evaluation.report import markdown_table
from asymvae.inpaint.kinds import KINDS
from asymvae.model.build import VAE
from asymvae.model.family import family_of
from asymvae.model.latent_space import PIPELINE_KEYS, LatentTransform

__all__ = ["CardInfo", "model_card", "write_card"]


@dataclass
class CardInfo:
    """What the card says beyond the model itself."""

    name: str
    fmt: str
    source: str
    """Where the exported model was read from."""
    run_config: dict[str, Any] | None = None
    """The training config.yaml beside `vae/`, when present."""
    provenance: dict[str, Any] | None = None
    """The training export's provenance.json (base model as loaded, training data: asymvae.data.provenance)."""
    eval_summary: dict[str, Any] | None = None
    """`summary` of an `asymvae eval` metrics.json, when given."""
    onnx_checks: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _millions(module: Any) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def _base_model(info: CardInfo) -> str:
    """The base model as the training loaded it, with the config's reference to it when that differs."""
    if info.run_config is None and info.provenance is None:
        return "not recorded (no training config.yaml or provenance.json beside vae/)"
    model_cfg = (info.run_config or {}).get("model") or {}
    spec = model_cfg.get("pretrained")
    loaded = (info.provenance or {}).get("base_model", spec)
    if not loaded:
        return "none: trained from scratch (`model.pretrained` is empty)"
    text = f"`{loaded}`"
    if loaded == spec and model_cfg.get("subfolder"):
        text += f" (subfolder `{model_cfg['subfolder']}`)"
    elif spec and spec != loaded:
        text += f" (`model.pretrained: {spec}`)"
    return text


def _model_section(vae: VAE, info: CardInfo) -> list[str]:
    c = vae.config
    model_cfg = (info.run_config or {}).get("model") or {}
    lines = ["## Model", "", f"- class: `{type(vae).__name__}`", f"- base model: {_base_model(info)}"]
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
        lines += [
            f"- decoder: widths {list(c.block_out_channels)}, {_millions(vae.decoder)} parameters; no mask branch",
            f"- encoder: {_millions(vae.encoder)} parameters",
        ]
    family = family_of(c)
    lines += [
        f"- latent space: {c.latent_channels} channels; pipelines decode `{LatentTransform.of(c).describe()}`; "
        f"force_upcast: {c.get('force_upcast')}",
        f"- family: {family.title} (`{family.name}`)"
        if family
        else "- family: none of the released ones "
        "(latent channels, scaling and shift factor differ from SD, SDXL, SD3 and FLUX.1)",
        "",
    ]
    return lines


def _data_section(info: CardInfo) -> list[str]:
    """Where the training data came from and its fingerprint: the export's provenance.json, else what the
    config says (a config names the shards but not what they held)."""
    record = (info.provenance or {}).get("data") or {}
    data_cfg = (info.run_config or {}).get("data") or {}
    shards = record.get("shards") or data_cfg.get("shards")
    lines = ["## Training data", ""]
    if shards:
        samples = f", {record['train_samples']} training samples" if record.get("train_samples") else ""
        lines.append(f"- prepared dataset: `{shards}` (made by `asymvae prepare`{samples})")
    source = record.get("source") or {}
    if source.get("spec"):
        about = ", ".join(
            str(x) for x in (source.get("description"), source.get("images") and f"{source['images']} images") if x
        )
        lines.append(f"- source: `{source['spec']}`" + (f" ({about})" if about else ""))
    elif shards:
        lines.append("- source: not recorded in this export (the prepared dataset's manifest.json names it)")
    elif data_cfg.get("source"):
        split = f", split `{data_cfg['split']}`" if data_cfg.get("split") else ""
        lines.append(f"- source: `{data_cfg['source']}`{split}")
    else:
        lines.append("- source: not recorded")
    if data_cfg.get("resolution"):
        lines.append(f"- training crops: {data_cfg['resolution']}²")
    fingerprint = record.get("fingerprint")
    if fingerprint and shards:
        of_source = f"; of its source: `{source['fingerprint']}`" if source.get("fingerprint") else ""
        lines.append(f"- data fingerprint: `{fingerprint}` (the prepared dataset's manifest{of_source})")
    elif fingerprint:
        lines.append(f"- data fingerprint: `{fingerprint}` (of the source as read)")
    else:
        lines.append("- data fingerprint: not recorded (no provenance.json beside vae/)")
    return [*lines, ""]


def _family_use(vae: VAE) -> list[str]:
    """How to run the model in its family's inpainting pipelines (docs/families/README.md has the whole story)."""
    family = family_of(vae.config)
    kinds = [k.pipeline for k in KINDS.values() if family and k.family == family.name]
    lines = ["### Inpainting", ""]
    if not kinds:
        return [*lines, "Decode with `image=` and `mask=` yourself (no released pipeline family matches).", ""]
    lines.append(f"Pipelines of this family: {', '.join(f'`{k}`' for k in kinds)}.")
    if family.name == "sd":
        lines.append(
            "`StableDiffusionInpaintPipeline` passes image and mask to `vae.decode` itself; load the VAE with "
            "`asymvae.inpaint.batched_condition_vae(PATH)` for several prompts or `num_images_per_prompt > 1` "
            "(the stock class fails with a KeyError there)."
        )
    else:
        lines.append(
            "These pipelines do **not** pass image and mask to `vae.decode`: handed this VAE as `vae=`, they decode "
            "blind. Run them through asymvae, which decodes their latents with the image and mask:"
        )
    lines += [
        "",
        "```bash",
        "asymvae inpaint --vae PATH/TO/THIS/FOLDER --pipeline PIPELINE_FOLDER --image in.png --mask mask.png \\",
        '    --prompt "..." --out out/   # --tile 1024 for large images',
        "```",
        "",
        "or in Python: `asymvae.inpaint.load_pipeline(...)` then `asymvae.inpaint.inpaint(pipe, InpaintRequest(...))`.",
        "",
    ]
    if family.name == "sd3":
        lines += [
            "Note: diffusers 0.42.1's `StableDiffusion3InpaintPipeline` decodes `latent / scaling_factor` without "
            "`+ shift_factor` (huggingface/diffusers#13611); `asymvae inpaint` applies the shift.",
            "",
        ]
    return lines


def _usage(info: CardInfo, vae: VAE) -> list[str]:
    transform = LatentTransform.of(vae.config).describe()
    if info.fmt == "diffusers":
        cls = type(vae).__name__
        saved = ", ".join(f"{k}={vae.config[k]!r}" for k in PIPELINE_KEYS if vae.config.get(k) is not None)
        return [
            "## Use",
            "",
            "```python",
            f"from diffusers import {cls}",
            f'vae = {cls}.from_pretrained("PATH/TO/THIS/FOLDER", subfolder="vae")',
            f"# vae.config has what pipelines read (config.json keeps it; diffusers 0.42.1 loads it): {saved}",
            *(
                [
                    f"# decode(z, image=..., mask=...) with z = {transform}, `latent` being the diffusion model's;",
                    "# image on [-1, 1] (B, 3, H, W), mask (B, 1, H, W), 1 = hole",
                ]
                if isinstance(vae, AsymmetricAutoencoderKL)
                else [f"# decode(z) with z = {transform}, `latent` being the diffusion model's (no image, no mask)"]
            ),
            "```",
            "",
            *(_family_use(vae) if isinstance(vae, AsymmetricAutoencoderKL) else []),
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
        f"model produces it (FLUX: unpacked to this shape); the graph computes `{transform}` itself |",
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


def _summary_line(vae: VAE, info: CardInfo) -> str:
    how = "trained with asymvae" if info.run_config or info.provenance else "exported by asymvae"
    where = f"exported as **{info.fmt}** from `{info.source}`"
    if isinstance(vae, AsymmetricAutoencoderKL):
        return (
            f"An asymmetric VAE decoder (arXiv 2306.04632), {how}, {where}. Its decoder also takes the image and "
            "the mask, so the pixels outside the mask come back as they were."
        )
    return (
        f"A plain VAE (`AutoencoderKL`), {how}, {where}. It decodes a latent alone (no image, no mask): a base "
        "that asymmetric decoders are trained on and evaluated against."
    )


def model_card(vae: VAE, info: CardInfo) -> str:
    """The README.md of an export: model, use, data, evaluation, training config."""
    lines = [f"# {info.name}", "", _summary_line(vae, info), ""]
    if info.files:
        lines += ["Files: " + ", ".join(f"`{f}`" for f in info.files), ""]
    lines += _model_section(vae, info)
    lines += _usage(info, vae)
    lines += _data_section(info)
    lines += ["## Evaluation", ""]
    if info.eval_summary:
        lines += [markdown_table(info.eval_summary)]
    elif isinstance(vae, AsymmetricAutoencoderKL):
        lines += ["Not evaluated with this export (run `asymvae eval`, then export with `--eval metrics.json`).", ""]
    else:
        lines += ["`asymvae eval` scores asymmetric decoders; a plain VAE like this one is their `--baseline`.", ""]
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
