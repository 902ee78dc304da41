"""Score a trained asymmetric decoder against the baseline VAE's decoder on the same images and masks.

For every held-out image the latent comes from the **baseline's encoder** (posterior mode): the
asymmetric model was trained on that frozen encoder, so both decoders decode the very same latent and
differ only in their decoders. Then

* the baseline decodes it plainly;
* the asymmetric decoder decodes it with `image=` the masked image and `mask=` the fixed mask (1 = hole);
* the asymmetric decoder decodes it with an all-ones mask (the "full-mask" case: the branch sees nothing,
  which is how plain text-to-image decoding uses it).

With `tile` (large images) all three decodings run in the same overlapping tiles (`asymvae.model.decode`), each
tile of the asymmetric decoder conditioned on its crop of image and mask; the encoder still sees the whole image.

Decoded images are clamped to [0, 1]; nothing is composited (pasting the kept pixels back would hide the
very error being measured). The baseline ignores masks, so its full-mask scores are its full-image scores.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.config import ConfigError
from asymvae.data.sources import DataSourceError
from asymvae.evaluation import metrics as M
from asymvae.evaluation.config import EvalConfig
from asymvae.evaluation.data import EvalItem, ShardItems, SourceItems, batches, eval_items
from asymvae.evaluation.grid import GridSample
from asymvae.evaluation.report import check_report_target, write_report
from asymvae.losses.config import LPIPSConfig
from asymvae.losses.perceptual import build_lpips
from asymvae.model.build import VAE, ModelSourceError
from asymvae.model.decode import TileConfig, decode_latents, upsampling_factor
from asymvae.model.files import load_vae
from asymvae.progress import Progress, phase

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalResult", "decode_all", "evaluate", "score_items"]

MASKED, FULL = "masked", "full_mask"
BASELINE, ASYMMETRIC = "baseline", "asymmetric"
REGIONS = ("", "_hole", "_preserved")


@dataclass
class EvalResult:
    """Mean metrics per condition and decoder, plus what produced them."""

    summary: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def pre_error_ratio(self) -> float:
        """Asymmetric / baseline preserved-region MSE (below 1: the asymmetric decoder keeps pixels better)."""
        return float(self.summary["pre_error_ratio"])


@dataclass
class Decoded:
    """One batch: the originals, masks and the three decodings, all on [0, 1]."""

    image: torch.Tensor
    mask: torch.Tensor
    baseline: torch.Tensor
    asymmetric: torch.Tensor
    asymmetric_full: torch.Tensor


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().add(1.0).div(2.0).clamp(0.0, 1.0)


@torch.no_grad()
def decode_all(
    model: AsymmetricAutoencoderKL,
    baseline: VAE,
    image: torch.Tensor,
    mask: torch.Tensor,
    tile: TileConfig | None = None,
) -> Decoded:
    """Encode `image` ([0, 1], (B, 3, H, W)) with the baseline's encoder; decode with both decoders (in tiles when
    `tile` is given)."""
    pixels = image * 2.0 - 1.0
    z = baseline.encode(pixels).latent_dist.mode()
    base = decode_latents(baseline, z, tile=tile)
    masked = pixels * (1.0 - mask)  # the decoder masks again; passing it masked shows the hole is never read
    asym = decode_latents(model, z, masked, mask, tile)
    ones = torch.ones_like(mask)
    full = decode_latents(model, z, pixels * 0.0, ones, tile)
    return Decoded(image, mask, _to_unit(base), _to_unit(asym), _to_unit(full))


def _region_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lpips_net: torch.nn.Module | None
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    weights = {"": None, "_hole": mask, "_preserved": 1.0 - mask}
    lp_map = M.lpips_map(lpips_net, pred, target) if lpips_net is not None else None
    for suffix, w in weights.items():
        out[f"psnr{suffix}"] = M.psnr(pred, target, w)
        out[f"ssim{suffix}"] = M.ssim(pred, target, w)
        if lpips_net is not None:
            lp = M.lpips_distance(lpips_net, pred, target) if w is None else M.masked_mean(lp_map, w)
            out[f"lpips{suffix}"] = lp
    out["pre_error"] = M.masked_mse(pred, target, 1.0 - mask)
    return out


def _full_metrics(pred: torch.Tensor, target: torch.Tensor, lpips_net: torch.nn.Module | None) -> dict:
    out = {"psnr": M.psnr(pred, target), "ssim": M.ssim(pred, target)}
    if lpips_net is not None:
        out["lpips"] = M.lpips_distance(lpips_net, pred, target)
    return out


def _nanmean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def score_items(
    model: AsymmetricAutoencoderKL,
    baseline: VAE,
    items: Iterable[EvalItem],
    batch_size: int,
    device: torch.device,
    lpips_net: torch.nn.Module | None = None,
    grid_samples: int = 0,
    total: int | None = None,
    progress: bool = False,
    tile: TileConfig | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[GridSample]]:
    """Score every item; returns (mean metrics per condition/decoder, per-image rows, grid samples)."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    rows: list[dict[str, Any]] = []
    grid: list[GridSample] = []
    shown = Progress("scoring", total, "img", logger=log, bar=progress, waiting_for="the first batch")
    for batch in batches(items, batch_size):
        image = torch.stack([it.image for it in batch]).to(device)
        mask = torch.stack([it.mask for it in batch]).to(device)
        d = decode_all(model, baseline, image, mask, tile)
        base = _region_metrics(d.baseline, image, mask, lpips_net)
        asym = _region_metrics(d.asymmetric, image, mask, lpips_net)
        full = _full_metrics(d.asymmetric_full, image, lpips_net)
        per = {(MASKED, BASELINE): base, (MASKED, ASYMMETRIC): asym, (FULL, ASYMMETRIC): full}
        # The baseline ignores masks: its full-mask decoding is its plain decoding.
        per[(FULL, BASELINE)] = {k: base[k] for k in full}
        for (cond, dec), metrics in per.items():
            for name, v in metrics.items():
                values[(cond, dec, name)].extend(v.cpu().tolist())
        for i, it in enumerate(batch):
            row: dict[str, Any] = {"key": it.key, "hole_share": float(it.mask.mean())}
            for (cond, dec), metrics in per.items():
                if cond == FULL and dec == BASELINE:
                    continue
                for name, v in metrics.items():
                    row[f"{cond}/{dec}/{name}"] = float(v[i])
            rows.append(row)
        for i in range(min(len(batch), grid_samples - len(grid))):
            grid.append(
                GridSample(
                    batch[i].key,
                    d.image[i].cpu(),
                    d.mask[i].cpu(),
                    d.baseline[i].cpu(),
                    d.asymmetric[i].cpu(),
                    d.asymmetric_full[i].cpu(),
                )
            )
        shown.update(len(batch))
    shown.close()
    if not rows:
        raise DataSourceError("no image could be scored: the evaluation data yielded nothing usable")
    summary: dict[str, Any] = {MASKED: {}, FULL: {}}
    for (cond, dec, name), vs in values.items():
        summary[cond].setdefault(dec, {})[name] = _nanmean(vs)
    return summary, rows, grid


def _shares_encoder(model: VAE, baseline: VAE) -> bool:
    """True when both encode alike: equal encoders, and equal quant convs (a missing one, as in SD3/FLUX VAEs,
    counts as the identity the asymmetric model carries in its place)."""

    def weights(vae: VAE) -> dict[str, torch.Tensor]:
        quant = vae.quant_conv
        if quant is None:
            n = 2 * vae.config.latent_channels
            quant_weights = {"weight": torch.eye(n).view(n, n, 1, 1), "bias": torch.zeros(n)}
        else:
            quant_weights = quant.state_dict()
        return {**vae.encoder.state_dict(), **{f"q.{k}": v for k, v in quant_weights.items()}}

    a, b = weights(model), weights(baseline)
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k].to(a[k])) for k in a)


def _open_items(cfg: EvalConfig) -> SourceItems | ShardItems:
    try:
        return eval_items(cfg.data, cfg.resolution, cfg.split, cfg.max_images, cfg.mask_seed)
    except DataSourceError as e:
        raise DataSourceError(str(e).replace("--data.split ", "--split ")) from e


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Run the evaluation described by `cfg` and write its report (`asymvae.evaluation.report.write_report`:
    metrics.json, metrics.md, grid.png, report.html) to `cfg.out_dir`."""
    start = time.perf_counter()
    check_report_target(Path(cfg.out_dir))  # before the models load: the report must not replace a user's files
    device = _device(cfg.device)
    with phase(f"loading the model from {cfg.model} and the baseline from {cfg.baseline} onto {device}", log):
        model = load_vae(cfg.model, require=AsymmetricAutoencoderKL).to(device)
        baseline = load_vae(cfg.baseline).to(device)
    if model.config.latent_channels != baseline.config.latent_channels:
        raise ModelSourceError(
            f"the model decodes {model.config.latent_channels}-channel latents but the baseline's encoder makes "
            f"{baseline.config.latent_channels}: --baseline must be the VAE the model was trained on"
        )
    if cfg.tiling is not None:
        try:
            cfg.tiling.in_latents(upsampling_factor(model))
        except ValueError as e:
            raise ConfigError(f"--tile: {e}") from e
    shared = _shares_encoder(model, baseline)
    if not shared:
        log.warning(
            "the model's encoder differs from the baseline's: both decoders get the baseline's latents, which "
            "is right only if the model was trained on the baseline's encoder"
        )
    lpips_net = None
    if cfg.lpips != "off":
        with phase(f"loading the LPIPS network ({cfg.lpips}/{cfg.lpips_net})", log):
            lpips_net = build_lpips(LPIPSConfig(weight=1.0, net=cfg.lpips_net, variant=cfg.lpips)).to(device)
    items = _open_items(cfg)
    total = len(items)
    log.info("scoring %d images of %s at %d² on %s", total, cfg.data, cfg.resolution, device)
    summary, rows, grid = score_items(
        model,
        baseline,
        items,
        cfg.batch_size,
        device,
        lpips_net=lpips_net,
        grid_samples=cfg.grid_samples,
        total=total,
        progress=cfg.progress,
        tile=cfg.tiling,
    )
    base_pre = summary[MASKED][BASELINE]["pre_error"]
    asym_pre = summary[MASKED][ASYMMETRIC]["pre_error"]
    summary.update(
        model=str(cfg.model),
        baseline=str(cfg.baseline),
        data=cfg.data,
        split=cfg.split,
        images=len(rows),
        resolution=cfg.resolution,
        mask_seed=items.mask_seed,
        mean_hole_share=sum(r["hole_share"] for r in rows) / len(rows),
        latents="baseline encoder, posterior mode",
        decoding="whole images" if cfg.tile is None else f"tiles of {cfg.tile} px, {cfg.tile_overlap} px overlap",
        shared_encoder=shared,
        lpips=None if lpips_net is None else f"{cfg.lpips}/{cfg.lpips_net}",
        pre_error_ratio=asym_pre / base_pre if base_pre else math.nan,
        seconds=round(time.perf_counter() - start, 1),
    )
    files = write_report(cfg.out_dir, summary, rows, grid)
    return EvalResult(summary, rows, files)
