"""The method on each VAE family at demo scale: preserved-region error of the asymmetric decoder vs its base.

For each family (sd, sdxl, sd3, flux) it runs, through the CLI as a user would, in `--workdir`:

1. `asymvae train demo_<family>`: fits the tiny stand-in base of the family's latent interface from scratch
   (`demo_base_<family>`: 16 channels without quant convs and a shift factor for sd3/flux), then trains an x1.5
   asymmetric decoder on its frozen encoder (SD's pair is `demo_base`/`demo`);
2. `asymvae eval` of that decoder against the base on held-out crops (`builtin:demo?seed=1`: 96 other crops of
   the training photos), 64², the fixed evaluation masks.

It writes every summary to `--out` (JSON) and prints the Markdown table of docs/families/README.md.

    python benchmarks/family_demo.py [--families sd sdxl sd3 flux] [--workdir /tmp/families] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

FAMILIES = ("sd", "sdxl", "sd3", "flux")
HELD_OUT = "builtin:demo?seed=1"


def _names(family: str) -> tuple[str, str]:
    """(base preset, asymmetric preset) of a family's demo."""
    return ("demo_base", "demo") if family == "sd" else (f"demo_base_{family}", f"demo_{family}")


def _cli(workdir: Path, *args: str) -> float:
    """Run `asymvae ARGS` in `workdir`; returns its wall time in seconds."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "asymvae", *args], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    if run.returncode:
        raise SystemExit(f"asymvae {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def run_family(family: str, workdir: Path) -> dict:
    """Train and evaluate one family's demo; returns the evaluation summary with timings."""
    base, asym = _names(family)
    train_s = _cli(workdir, "train", asym, "--train.progress", "false")
    base_dir = max((workdir / "work_dirs" / base).glob("step*"), key=lambda p: int(p.name[4:]))
    asym_dir = max((workdir / "work_dirs" / asym).glob("step*"), key=lambda p: int(p.name[4:]))
    out = workdir / f"eval_{family}"
    eval_s = _cli(
        workdir, "eval", str(asym_dir), "--data", HELD_OUT, "--baseline", str(base_dir), "--resolution", "64",
        "--out", str(out),
    )  # fmt: skip
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    config = json.loads((asym_dir / "vae" / "config.json").read_text())
    return {
        "family": family,
        "latent_channels": config["latent_channels"],
        "scaling_factor": config["scaling_factor"],
        "shift_factor": config.get("shift_factor"),
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "summary": summary,
    }


def table(rows: list[dict]) -> str:
    """The Markdown table of docs/families/README.md."""
    lines = [
        "| family shape | latent ch | scaling / shift | pre_error base | pre_error asym | ratio | "
        "PSNR preserved base → asym (dB) | full-mask PSNR base → asym (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["summary"]
        base, asym = s["masked"]["baseline"], s["masked"]["asymmetric"]
        full_base, full_asym = s["full_mask"]["baseline"], s["full_mask"]["asymmetric"]
        shift = "—" if r["shift_factor"] is None else r["shift_factor"]
        lines.append(
            f"| {r['family']} | {r['latent_channels']} | {r['scaling_factor']} / {shift} | {base['pre_error']:.3e} "
            f"| {asym['pre_error']:.3e} | **{s['pre_error_ratio']:.3f}** | {base['psnr_preserved']:.2f} → "
            f"{asym['psnr_preserved']:.2f} | {full_base['psnr']:.2f} → {full_asym['psnr']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the families, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/asymvae_families"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "family_demo.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in args.families:
        rows.append(run_family(family, args.workdir))
        print(f"{family}: pre_error ratio {rows[-1]['summary']['pre_error_ratio']:.3f}", flush=True)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU used",
        "torch": torch.__version__,
        "held_out": HELD_OUT,
        "families": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
