"""`asymvae eval` on tiny models: fixed masks, both decoders on the same latents, the report, bad inputs."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.cli import main
from asymvae.data.sources import DataSourceError
from asymvae.evaluation.config import EvalConfig
from asymvae.evaluation.data import EvalItem, SourceItems
from asymvae.evaluation.grid import GridSample, cell, error_scale, grid_image, row_labels, zoom_window
from asymvae.evaluation.run import decode_all, evaluate, score_items

DATA = "builtin:demo?count=5&size=96&seed=1"


def test_eval_items_are_fixed_centre_crops_with_fixed_masks():
    a, b = list(SourceItems(DATA, 32)), list(SourceItems(DATA, 32))
    assert len(a) == 5 and [i.key for i in a] == [i.key for i in b]
    for x, y in zip(a, b, strict=True):
        assert x.image.shape == (3, 32, 32) and x.mask.shape == (1, 32, 32)
        assert float(x.image.min()) >= 0 and float(x.image.max()) <= 1
        assert torch.equal(x.image, y.image) and torch.equal(x.mask, y.mask)
        # Every evaluation mask has both a hole and a kept part.
        assert 0 < float(x.mask.mean()) < 1
    assert not torch.equal(a[0].mask, a[1].mask)
    assert len(SourceItems(DATA, 32, max_images=2)) == 2


def test_the_asymmetric_decoder_never_reads_the_hole(asym_export_dir, base_vae_dir):
    model = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae").eval()
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae").eval()
    items = list(SourceItems(DATA, 32, max_images=2))
    image = torch.stack([i.image for i in items])
    mask = torch.stack([i.mask for i in items])
    d = decode_all(model, base, image, mask)
    assert d.asymmetric.shape == image.shape and float(d.asymmetric.min()) >= 0 and float(d.asymmetric.max()) <= 1
    # Change only the hole's pixels: the latent changes (the encoder sees them) but the branch must not.
    with torch.no_grad():
        z = base.encode(image * 2 - 1).latent_dist.mode()
        scrambled = torch.where(mask.bool().expand_as(image), torch.rand_like(image), image)
        one = model.decode(z, image=(image * 2 - 1) * (1 - mask), mask=mask).sample
        two = model.decode(z, image=scrambled * 2 - 1, mask=mask).sample
    assert torch.allclose(one, two, atol=1e-6)
    # The full-mask decoding ignores the image entirely and differs from the conditioned one.
    assert not torch.allclose(d.asymmetric_full, d.asymmetric)


def test_score_items_accepts_any_iterable_of_items(asym_export_dir, base_vae_dir):
    model = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae").eval()
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae").eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    items = [EvalItem(f"k{i}", image, mask) for i in range(3)]  # e.g. from prepared shards with stored masks
    summary, rows, grid = score_items(model, base, iter(items), 2, torch.device("cpu"), grid_samples=2)
    assert [r["key"] for r in rows] == ["k0", "k1", "k2"] and len(grid) == 2
    assert rows[0]["hole_share"] == pytest.approx(0.25)
    b = summary["masked"]["baseline"]
    assert set(b) == {"psnr", "psnr_hole", "psnr_preserved", "ssim", "ssim_hole", "ssim_preserved", "pre_error"}
    # Identical images: every row equal, so the means equal each row.
    assert rows[2]["masked/asymmetric/pre_error"] == pytest.approx(summary["masked"]["asymmetric"]["pre_error"])
    # The baseline ignores the mask: its full-mask scores are its full-image scores.
    assert summary["full_mask"]["baseline"] == {"psnr": b["psnr"], "ssim": b["ssim"]}


def test_evaluate_writes_the_report(asym_export_dir, base_vae_dir, tmp_path):
    cfg = EvalConfig(
        model=str(asym_export_dir),
        baseline=str(base_vae_dir),
        data=DATA,
        out=str(tmp_path / "eval"),
        resolution=64,
        batch_size=2,
        grid_samples=3,
        progress=False,
    )
    result = evaluate(cfg)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        ".asymvae-written",  # what marks these files as asymvae's, which a later eval may replace
        "grid.png",
        "metrics.json",
        "metrics.md",
        "report.html",
    ]
    data = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    s = data["summary"]
    assert s["images"] == 5 and len(data["per_image"]) == 5 and s["shared_encoder"] is True
    assert s["lpips"] == "shift_tolerant/alex" and "lpips_preserved" in s["masked"]["asymmetric"]
    assert s["pre_error_ratio"] == pytest.approx(
        s["masked"]["asymmetric"]["pre_error"] / s["masked"]["baseline"]["pre_error"]
    )
    per_image = [r["masked/baseline/pre_error"] for r in data["per_image"]]
    assert s["masked"]["baseline"]["pre_error"] == pytest.approx(sum(per_image) / 5)
    assert result.pre_error_ratio == pytest.approx(s["pre_error_ratio"])
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| masked | pre_error: MSE ↓ | preserved |" in table and "5 images" in table
    from PIL import Image

    # Three rows (baseline, asymmetric, full mask) per sample; 64² images drawn at 128².
    assert Image.open(tmp_path / "eval" / "grid.png").size[1] > 3 * 3 * 128


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_eval_cli_runs_and_rejects_bad_inputs(asym_export_dir, base_vae_dir, tmp_path, capsys):
    common = ["--data", DATA, "--resolution", "32", "--max-images", "2", "--lpips", "off"]
    code, out, _ = _cli(
        capsys, "eval", str(asym_export_dir), "--baseline", str(base_vae_dir), *common, "--out", str(tmp_path / "e")
    )
    assert code == 0 and "| masked | pre_error" in out and (tmp_path / "e" / "metrics.json").is_file()
    # The same HTML page the pipeline's evaluate step shows: the table's numbers and the grid inline.
    page = (tmp_path / "e" / "report.html").read_text()
    summary = json.loads((tmp_path / "e" / "metrics.json").read_text())["summary"]
    assert f"<td>{summary['masked']['asymmetric']['pre_error']:.3e}</td>" in page
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    assert png == (tmp_path / "e" / "grid.png").read_bytes() and str(tmp_path / "e" / "report.html") in out

    code, _, err = _cli(capsys, "eval", str(tmp_path / "missing"), "--baseline", str(base_vae_dir), *common)
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    # A plain VAE has no mask branch to evaluate.
    code, _, err = _cli(capsys, "eval", str(base_vae_dir), "--baseline", str(base_vae_dir), *common)
    assert code == 2 and "AsymmetricAutoencoderKL is needed" in err
    code, _, err = _cli(
        capsys, "eval", str(asym_export_dir), "--baseline", str(base_vae_dir), "--data", str(tmp_path / "nope")
    )
    assert code == 2 and "no such folder" in err
    code, _, err = _cli(
        capsys, "eval", str(asym_export_dir), "--baseline", str(base_vae_dir), "--data", DATA, "--resolution", "30"
    )
    assert code == 2 and "multiple of 8" in err


def test_a_prepared_dataset_is_scored_with_its_stored_masks(asym_export_dir, base_vae_dir, tmp_path):
    from PIL import Image

    from asymvae.data.prepare import PrepareConfig, prepare
    from asymvae.data.shards import iter_split
    from asymvae.data.transforms import center_square
    from asymvae.evaluation.data import ShardItems, eval_items

    out = tmp_path / "prepared"
    result = prepare("builtin:demo?count=12&size=96", str(out), PrepareConfig(val_fraction=0.5), progress=False)
    n_val = result.manifest.samples("val")
    assert n_val >= 2
    items = eval_items(str(out), 32, "validation", None, seed=0)
    assert isinstance(items, ShardItems) and len(items) == n_val and items.mask_seed == 0
    stored = list(iter_split(str(out), "val"))
    for item, sample in zip(items, stored, strict=True):
        assert item.image.shape == (3, 32, 32) and item.mask.shape == (1, 32, 32)
        # The mask is the stored one under the image's crop, not one drawn anew.
        expected = np.asarray(center_square(Image.fromarray(sample.mask), 32, Image.Resampling.NEAREST))
        assert np.array_equal(item.mask[0].numpy() > 0.5, expected)
        assert 0 < float(item.mask.mean()) < 1
    assert len(eval_items(str(out / "manifest.json"), 32, "val", 1, seed=0)) == 1

    cfg = EvalConfig(
        model=str(asym_export_dir),
        baseline=str(base_vae_dir),
        data=str(out),
        out=str(tmp_path / "eval"),
        resolution=32,
        lpips="off",
        grid_samples=0,
        progress=False,
    )
    summary = evaluate(cfg).summary
    assert summary["images"] == n_val and summary["mask_seed"] == 0
    with pytest.raises(DataSourceError, match="no split 'test'"):
        ShardItems(str(out), 32, split="test")


def test_tiled_evaluation_for_large_images(asym_export_dir, base_vae_dir, tmp_path, capsys):
    common = ["--baseline", str(base_vae_dir), "--data", DATA, "--resolution", "64", "--max-images", "2"]
    common += ["--lpips", "off"]
    runs = {}
    overlap = ["--tile-overlap", "16"]
    tilings = {"whole": [], "one_tile": ["--tile", "64", *overlap], "tiles": ["--tile", "32", *overlap]}
    for name, tiling in tilings.items():
        code, out, err = _cli(capsys, "eval", str(asym_export_dir), *common, "--out", str(tmp_path / name), *tiling)
        assert code == 0, err
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())["summary"]
    assert runs["whole"]["masked"] == runs["one_tile"]["masked"]  # one tile is the whole-image decode
    assert runs["tiles"]["decoding"] == "tiles of 32 px, 16 px overlap" and "Decoded in tiles of 32 px" in out
    assert runs["tiles"]["masked"]["asymmetric"]["pre_error"] != runs["whole"]["masked"]["asymmetric"]["pre_error"]

    code, _, err = _cli(capsys, "eval", str(asym_export_dir), *common, "--tile", "36", "--tile-overlap", "16")
    assert code == 2 and "tile size 36 is not a multiple of the decoder's upsampling factor 8" in err
    code, _, err = _cli(capsys, "eval", str(asym_export_dir), *common, "--tile", "32", "--tile-overlap", "32")
    assert code == 2 and "below the tile size" in err


def _textured(seed: int = 0, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, side, side, generator=g) * 0.5 + 0.25
    mask = torch.zeros(1, side, side)
    mask[:, 4:20, 6:22] = 1
    return image, mask


def _sample(error: float, seed: int = 0) -> GridSample:
    """A sample whose decodings are off by about `error` (kept region: a tenth of that for the asymmetric one)."""
    image, mask = _textured(seed)
    g = torch.Generator().manual_seed(seed + 1)

    def noisy(scale: float) -> torch.Tensor:
        return (image + scale * torch.randn(image.shape, generator=g)).clamp(0, 1)

    asym = torch.where(mask.bool(), noisy(error), noisy(error / 10))
    return GridSample(f"k{seed}", image, mask, noisy(error), asym, noisy(error))


def _tile(grid, shape, sample: int, row: str, column: str) -> np.ndarray:
    left, top, right, bottom = cell(shape, sample, row, column)
    return np.asarray(grid)[top:bottom, left:right]


def test_the_grids_error_maps_follow_the_data():
    """A real SD VAE's errors are a few hundredths: the error maps must not be black for them."""
    small = [_sample(0.004, 0), _sample(0.004, 1)]
    grid = grid_image(small)
    shape = tuple(small[0].image.shape)
    # The baseline's error tile reaches the top of the heat scale (pale yellow: red channel 252).
    assert _tile(grid, shape, 0, "baseline", "error")[..., 0].max() >= 240
    # The scale is the data's: errors ten times larger get a scale ten times larger.
    assert error_scale([_sample(0.04, 0), _sample(0.04, 1)]) == pytest.approx(10 * error_scale(small), rel=0.2)
    assert 0.004 < error_scale(small) < 0.02


def test_grid_rows_are_labelled_with_their_numbers_and_the_hole_is_outlined():
    from asymvae.evaluation import metrics as M

    s = _sample(0.05)
    labels = row_labels(s)
    assert [lines[0 if i else 1] for i, lines in enumerate(labels)] == [
        "baseline",
        "asymmetric, masked",
        "asymmetric, full mask",
    ]
    kept = 1 - s.mask[None]
    pre = float(M.masked_mse(s.asymmetric[None], s.image[None], kept)[0])
    assert f"pre_error {pre:.2e}" in labels[1] and "hole 25% of the image" in labels[1]
    assert labels[0][0] == "k0" and any(line.startswith("PSNR kept") for line in labels[0])
    full = float(M.psnr(s.asymmetric_full[None], s.image[None])[0])
    assert f"PSNR {full:.2f} dB" in labels[2]

    grid = grid_image([s])
    shape = tuple(s.image.shape)
    for row in ("baseline", "asymmetric", "full_mask"):
        assert (_tile(grid, shape, 0, row, "label") < 100).any(), row  # text is drawn in every label cell
    cyan = np.array([0, 229, 255])
    outlined = (_tile(grid, shape, 0, "asymmetric", "decoding") == cyan).all(-1)
    # 32² drawn at 128²: the hole (rows 4..19, columns 6..21) has its edge at 16 and 80 px, 24 and 88 px.
    assert outlined[16:80, 23:25].all() and outlined[15:17, 24:88].all() and not outlined[40:60, 40:70].any()
    assert (_tile(grid, shape, 0, "baseline", "error") == cyan).all(-1).any()
    # The full-mask row: the whole image is the hole, so there is no edge to draw.
    assert not (_tile(grid, shape, 0, "full_mask", "decoding") == cyan).all(-1).any()


def test_the_zoom_shows_a_detailed_preserved_region():
    image = torch.full((3, 32, 32), 0.5)
    mask = torch.zeros(1, 32, 32)
    mask[:, :16] = 1  # the top half is the hole
    g = torch.Generator().manual_seed(0)
    image[:, 2:10, 2:10] = torch.rand(3, 8, 8, generator=g)  # detail in the hole: not a preserved region
    image[:, 20:28, 18:26] = torch.rand(3, 8, 8, generator=g)  # detail outside it
    top, left, side = zoom_window(image, mask)
    assert side == 8 and float(mask[:, top : top + side, left : left + side].sum()) == 0
    assert (top, left) == (20, 18)
    s = GridSample("z", image, mask, image * 0.9, image, image * 0.8)
    zoom = _tile(grid_image([s]), tuple(image.shape), 0, "baseline", "zoom")
    # Left: the input's crop, upscaled to the tile's height; right: the decoding's.
    crop = (image[:, 20:28, 18:26].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(zoom[::16, :128:16], crop)


def _psnr_row(table: str, case: str, region: str) -> tuple[float, float]:
    line = next(r for r in table.splitlines() if r.startswith(f"| {case} | PSNR (dB) ↑ | {region} |"))
    base, asym = line.strip("| ").split(" | ")[-2:]
    return float(base), float(asym)


def test_the_readmes_demo_figures_are_the_run_docs_evaluation_records():
    """README.md quotes the demo's figures from the one table docs/evaluation.md records (pasted whole from a
    `make demo` run's metrics.md between the demo-figures markers): after a refresh, this says what to update."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "evaluation.md").read_text()
    block = docs.split("<!-- demo-figures:begin")[1].split("<!-- demo-figures:end")[0]
    section = (root / "README.md").read_text().split("## What the demo produces")[1].split("\n## ")[0]
    recorded = {line for line in block.splitlines() if line.startswith("|")}
    quoted = [line for line in section.splitlines() if line.startswith("|")]
    assert len(quoted) >= 4, "README.md's demo table is missing"
    assert [line for line in quoted if line not in recorded] == [], "README rows not in docs/evaluation.md's table"
    run = re.search(r"the `make demo` run of (\d{4}-\d{2}-\d{2})", " ".join(block.split()))
    flat = " ".join(section.split())  # the prose, as one line
    assert run and run.group(0) in flat, "README and docs name different runs"
    ratio = re.search(r"pre_error ratio \(asymmetric / baseline\): \*\*([\d.]+)\*\*", block).group(1)
    assert f"**pre_error ratio: {ratio}.**" in flat
    images, side, hole = re.search(r"(\d+) images of .* at (\d+)², .*mean hole ([\d.]+)%", block).groups()
    assert f"{images} held-out crops at {side}², mean hole {hole}%" in flat
    # The differences README.md spells out, from the recorded rows.
    full, inside = _psnr_row(block, "full mask", "full image"), _psnr_row(block, "masked", "hole")
    assert f"(full mask) is {full[0] - full[1]:.2f} dB lower" in flat
    assert f"inside the hole it is {inside[0] - inside[1]:.2f} dB lower" in flat
