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
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AsymmetricAutoencoderKL
from tqdm.auto import tqdm

from asymvae.config import ConfigError
from asymvae.data.sources import DataSourceError
from asymvae.evaluation import fid as fid_lib
from asymvae.evaluation import metrics as M
from asymvae.evaluation.data import EVAL_MASK_SEED, EvalItem, ShardItems, SourceItems, batches, eval_items
from asymvae.evaluation.report import GridSample, write_report
from asymvae.losses.config import LPIPSConfig
from asymvae.losses.perceptual import build_lpips
from asymvae.model.build import VAE, ModelSourceError
from asymvae.model.decode import TileConfig, decode_latents, upsampling_factor
from asymvae.model.load import load_vae

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalResult", "decode_all", "evaluate", "score_items"]

MASKED, FULL = "masked", "full_mask"
BASELINE, ASYMMETRIC = "baseline", "asymmetric"
REGIONS = ("", "_hole", "_preserved")


@dataclass
class EvalConfig:
    """One evaluation: which models, which images, where the report goes."""

    model: str
    """The asymmetric model: a training export (`OUTPUT/step<N>`, holding `vae/`) or a diffusers VAE folder."""
    baseline: str
    """The baseline VAE (a plain AutoencoderKL, or any VAE whose encoder produced the model's training latents)."""
    data: str
    """Held-out images: a dataset made by `asymvae prepare` (its manifest, folder or `s3://` prefix: the val
    split with its stored masks), or any training data source (folder, dataset, `builtin:demo?seed=1`)."""
    out: str | None = None
    """Report folder (default: `<model>/eval`)."""
    split: str = "validation"
    """Split of a dataset / split subfolder to read (`validation` = a prepared dataset's `val`); sources
    without splits ignore it."""
    resolution: int = 256
    """Side of the centre crop scored, in px (a multiple of 8)."""
    max_images: int | None = None
    """Score only the first N images."""
    batch_size: int = 8
    """Images decoded at once."""
    lpips: str = "shift_tolerant"
    """`shift_tolerant` (ST-LPIPS, weights ship with the package), `standard` (needs torchvision's weights) or
    `off`."""
    lpips_net: str = "alex"
    """LPIPS backbone: `alex` or `vgg`."""
    fid: bool = True
    """Compute FID when pytorch-fid and its weights are present (skipped with a message otherwise)."""
    grid_samples: int = 4
    """Rows of the PNG grid."""
    mask_seed: int = EVAL_MASK_SEED
    """Seed of the fixed evaluation masks of a data source (a prepared dataset brings its masks)."""
    tile: int | None = None
    """Decode in overlapping tiles of this many px (large images; both decoders alike); None: whole images."""
    tile_overlap: int = 128
    """Pixels neighbouring tiles share (with `tile`)."""
    device: str | None = None
    """`cuda`, `cpu`, ... (default: cuda when available)."""
    progress: bool = True
    """A progress bar on a terminal."""

    def __post_init__(self) -> None:
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {self.resolution}")
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.max_images is not None and self.max_images <= 0:
            raise ValueError(f"--max-images must be positive, got {self.max_images}")
        if self.lpips not in ("shift_tolerant", "standard", "off"):
            raise ValueError(f"--lpips must be shift_tolerant, standard or off, got {self.lpips!r}")
        if self.lpips_net not in ("alex", "vgg"):
            raise ValueError(f"--lpips-net must be alex or vgg, got {self.lpips_net!r}")
        if self.tile is not None:
            try:
                TileConfig(size=self.tile, overlap=self.tile_overlap)
            except ValueError as e:
                raise ValueError(f"--tile {self.tile} --tile-overlap {self.tile_overlap}: {e}") from e

    @property
    def tiling(self) -> TileConfig | None:
        """The tiled-decoding settings, or None for whole images."""
        return None if self.tile is None else TileConfig(size=self.tile, overlap=self.tile_overlap)

    @property
    def out_dir(self) -> Path:
        """Where the report is written."""
        return Path(self.out) if self.out else Path(self.model) / "eval"


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
    fid: bool = False,
    grid_samples: int = 0,
    total: int | None = None,
    progress: bool = False,
    tile: TileConfig | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[GridSample]]:
    """Score every item; returns (mean metrics per condition/decoder, per-image rows, grid samples)."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    rows: list[dict[str, Any]] = []
    grid: list[GridSample] = []
    fid_stats = None
    if fid:
        inception = fid_lib.inception_features(device)
        fid_stats = {k: fid_lib.FeatureStats() for k in ("real", BASELINE, ASYMMETRIC, "asymmetric_full")}
    bar = tqdm(
        total=total,
        desc="eval",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    done = 0
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
                )
            )
        if fid_stats is not None:
            with torch.no_grad():
                for name, imgs in (
                    ("real", image),
                    (BASELINE, d.baseline),
                    (ASYMMETRIC, d.asymmetric),
                    ("asymmetric_full", d.asymmetric_full),
                ):
                    fid_stats[name].add(inception(imgs)[0].flatten(1))
        done += len(batch)
        bar.update(len(batch))
        if bar.disable:
            log.info("scored %d%s images", done, f"/{total}" if total else "")
    bar.close()
    if not rows:
        raise DataSourceError("no image could be scored: the evaluation data yielded nothing usable")
    summary: dict[str, Any] = {MASKED: {}, FULL: {}}
    for (cond, dec, name), vs in values.items():
        summary[cond].setdefault(dec, {})[name] = _nanmean(vs)
    if fid_stats is not None:
        real = fid_stats["real"].mean_cov()
        for cond, dec, key in ((MASKED, BASELINE, BASELINE), (MASKED, ASYMMETRIC, ASYMMETRIC)):
            summary[cond][dec]["fid"] = fid_lib.frechet_distance(*fid_stats[key].mean_cov(), *real)
        summary[FULL][BASELINE]["fid"] = summary[MASKED][BASELINE]["fid"]
        summary[FULL][ASYMMETRIC]["fid"] = fid_lib.frechet_distance(*fid_stats["asymmetric_full"].mean_cov(), *real)
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
        raise DataSourceError(str(e).replace("--set data.split=", "--split ")) from e


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Run the evaluation described by `cfg` and write metrics.json, metrics.md and grid.png to `cfg.out_dir`."""
    start = time.perf_counter()
    device = _device(cfg.device)
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
        lpips_net = build_lpips(LPIPSConfig(weight=1.0, net=cfg.lpips_net, variant=cfg.lpips)).to(device)
    fid_reason = None
    if cfg.fid:
        fid_reason = fid_lib.fid_unavailable()
        if fid_reason:
            log.warning("%s", fid_reason)
    else:
        fid_reason = "FID not computed: switched off (--no-fid)."
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
        fid=fid_reason is None,
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
        fid_note=fid_reason,
        pre_error_ratio=asym_pre / base_pre if base_pre else math.nan,
        seconds=round(time.perf_counter() - start, 1),
    )
    files = write_report(cfg.out_dir, summary, rows, grid)
    return EvalResult(summary, rows, files)
