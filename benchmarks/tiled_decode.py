"""Tiled, mask-conditioned decoding against the whole-image decode: peak memory, agreement, seams, kept pixels.

For each case (image side, tile, overlap) it builds a photo mosaic of that side (four of scikit-image's photos,
2x2), an evaluation mask of that size (asymvae's fixed evaluation masks, 1 = hole), encodes it with the base VAE
(whole image, posterior mode), then decodes the same latent with the trained asymmetric decoder twice, each in a
fresh child process so that its peak memory is its own:

* whole: `decode_latents(vae, z, image, mask)`;
* tiled, each tile with its own GroupNorm statistics: `TileConfig(tile, overlap, norm_passes=0)` (how diffusers'
  AutoencoderKL tiles);
* tiled, statistics shared by all tiles: `TileConfig(tile, overlap)` (2 estimation passes, the default).

Reported per case:

* peak memory: the child's peak resident set (VmHWM) and its growth over the resident set just before decoding;
* agreement of each tiled decode with whole on [0, 1]: max and mean absolute difference (also where pixels are
  kept / generated), PSNR;
* seams: across every line where a tile starts or ends inside the image, the mean absolute step between the two
  neighbouring pixel rows/columns, tiled over whole (1.00 = no seam; above 1 = a visible edge);
* preserved region: pre_error (MSE on kept pixels against the input) of every decode and of the base VAE's own.

    python benchmarks/tiled_decode.py --model work_dirs/demo/step400 --baseline work_dirs/demo_base/step600 \\
        [--case 2048:512:128 --case 512:256:64] [--out benchmarks/results/tiled_decode.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asymvae.data.demo_images import load_photo
from asymvae.masks import eval_mask_config, mask_tensor
from asymvae.model.decode import TileConfig, decode_latents, tile_starts, upsampling_factor
from asymvae.model.files import load_vae

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def mosaic(side: int) -> torch.Tensor:
    """(1, 3, side, side) on [-1, 1]: four photos, each resized to side/2, in a 2x2 grid."""
    half = side // 2
    canvas = Image.new("RGB", (side, side))
    for i, name in enumerate(PHOTOS):
        photo = load_photo(name)
        short = min(photo.size)
        photo = photo.crop((0, 0, short, short)).resize((half, half), Image.Resampling.BICUBIC)
        canvas.paste(photo, ((i % 2) * half, (i // 2) * half))
    pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return pixels * 2 - 1


def _status(key: str) -> int:
    """A /proc/self/status figure (kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(model: str, inputs: str, output: str, tile: str) -> None:
    """Decode the saved inputs once (whole, or tiled with `tile` = "SIZE:OVERLAP:NORM_PASSES"); print memory and
    time as JSON."""
    vae = load_vae(model).float()
    data = torch.load(inputs, weights_only=True)
    tiling = None if tile == "whole" else TileConfig(*map(int, tile.split(":")))
    before = _status("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        out = decode_latents(vae, data["z"], data["image"], data["mask"], tiling)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    torch.save(out, output)
    print(json.dumps({"rss_before": before, "peak": peak, "growth": peak - before, "seconds": seconds}))


def _run_child(model: str, inputs: Path, output: Path, tile: str) -> dict:
    cmd = [sys.executable, __file__, "--child", model, str(inputs), str(output), tile]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(f"decode child failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def seam_ratio(tiled: torch.Tensor, whole: torch.Tensor, side: int, tile: int, overlap: int, factor: int) -> dict:
    """Mean |step| across each internal tile edge, tiled / whole (see the module docstring)."""
    starts = tile_starts(side // factor, tile // factor, overlap // factor)
    lines = sorted({s * factor for s in starts[1:]} | {(s + tile // factor) * factor for s in starts[:-1]})
    if not lines:
        return {"lines": 0, "mean": 1.0, "max": 1.0}
    ratios = []
    for p in lines:
        for axis in (2, 3):  # horizontal lines (rows), vertical lines (columns)

            def step(x: torch.Tensor, p: int = p, axis: int = axis) -> float:
                return float((x.narrow(axis, p, 1) - x.narrow(axis, p - 1, 1)).abs().mean())

            ratios.append(step(tiled) / step(whole))
    return {"lines": len(lines) * 2, "mean": float(np.mean(ratios)), "max": float(np.max(ratios))}


TILED = {"own": 0, "shared": TileConfig().norm_passes}
"""The tiled decodes compared: GroupNorm statistics of each tile alone, or shared by all tiles (default passes)."""


def run_case(model: str, baseline_path: str, side: int, tile: int, overlap: int, work: Path) -> dict:
    """One (side, tile, overlap) case; see the module docstring."""
    baseline = load_vae(baseline_path).float()
    image = mosaic(side)
    mask = mask_tensor(eval_mask_config(), side, side, 20_231_201, 0)[None]
    with torch.no_grad():
        z = baseline.encode(image).latent_dist.mode()
        plain = baseline.decode(z).sample
    inputs = work / f"inputs_{side}.pt"
    torch.save({"z": z, "image": image * (1 - mask), "mask": mask}, inputs)
    del baseline
    memory = {"whole": _run_child(model, inputs, work / "whole.pt", "whole")}
    for name, passes in TILED.items():
        memory[name] = _run_child(model, inputs, work / f"{name}.pt", f"{tile}:{overlap}:{passes}")
    whole = _unit(torch.load(work / "whole.pt", weights_only=True))
    target, keep = _unit(image), (1 - mask).bool().expand_as(whole)
    factor = upsampling_factor(load_vae(model))

    def pre_error(x: torch.Tensor) -> float:
        return float(((x - target) ** 2)[keep].mean())

    result = {
        "side": side,
        "tile": tile,
        "overlap": overlap,
        "tiles": len(tile_starts(side // factor, tile // factor, overlap // factor)) ** 2,
        "hole_share": float(mask.mean()),
        "memory": memory,
        "pre_error": {"whole": pre_error(whole), "base_vae": pre_error(_unit(plain))},
    }
    for name, passes in TILED.items():
        tiled = _unit(torch.load(work / f"{name}.pt", weights_only=True))
        diff = (tiled - whole).abs()
        result[name] = {
            "norm_passes": passes,
            "max_abs": float(diff.max()),
            "mean_abs": float(diff.mean()),
            "mean_abs_kept": float(diff[keep].mean()),
            "mean_abs_hole": float(diff[~keep].mean()),
            "psnr_db": float(10 * math.log10(1 / float((diff**2).mean()))),
            "seams": seam_ratio(tiled, whole, side, tile, overlap, factor),
        }
        result["pre_error"][name] = pre_error(tiled)
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table(cases: list[dict]) -> str:
    """Markdown tables of docs/families/README.md."""
    names = {"whole": "whole image", "own": "tiles, own statistics", "shared": "tiles, shared statistics"}
    lines = [
        "| image | decode | tiles | peak RSS | growth during decode | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        for key, label in names.items():
            m = c["memory"][key]
            how = label if key == "whole" else f"{label} ({c['tile']} px, {c['overlap']} px overlap)"
            count = 1 if key == "whole" else c["tiles"]
            lines.append(
                f"| {c['side']}² | {how} | {count} | {_mib(m['peak'])} | {_mib(m['growth'])} | {m['seconds']:.1f} |"
            )
    lines += [
        "",
        "| image | tiled decode | vs whole: max / mean abs (kept, hole) | PSNR (dB) | seam step ratio mean / max "
        "| pre_error tiled | pre_error whole | pre_error base VAE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        p = c["pre_error"]
        for key in ("own", "shared"):
            d, s = c[key], c[key]["seams"]
            lines.append(
                f"| {c['side']}² | {names[key]} | {d['max_abs']:.3f} / {d['mean_abs']:.4f} ({d['mean_abs_kept']:.4f}, "
                f"{d['mean_abs_hole']:.4f}) | {d['psnr_db']:.1f} | {s['mean']:.2f} / {s['max']:.2f} | {p[key]:.3e} "
                f"| {p['whole']:.3e} | {p['base_vae']:.3e} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the cases, write and print the results."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained asymmetric VAE (export folder)")
    parser.add_argument("--baseline", required=True, help="the base VAE whose encoder it was trained on")
    parser.add_argument("--case", action="append", help="SIDE:TILE:OVERLAP in px (default: 2048:512:128, 512:256:64)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tiled_decode.json")
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory() as work:
        for spec in args.case or ["2048:512:128", "512:256:64"]:
            side, tile, overlap = map(int, spec.split(":"))
            cases.append(run_case(args.model, args.baseline, side, tile, overlap, Path(work)))
            print(json.dumps(cases[-1]), flush=True)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU used",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "baseline": args.baseline,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(cases))


if __name__ == "__main__":
    main()
