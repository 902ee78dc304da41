"""Training speed: the plain diffusers loop (the baseline) against asymvae's own training step.

Both arms train the x1.5 asymmetric decoder (SD's frozen encoder, 160M trainable parameters) with
L1 + LPIPS(vgg), AdamW and bf16 autocast, from the same initial weights, on the same batches, with
the same posterior noise; they run one after the other in this process. Per arm it prints img/s,
achieved TFLOP/s (FLOPs of one step counted with torch.utils.flop_counter on the eager fp32 step),
the share of the bf16 matmul rate measured on the same card, peak memory, and ours / baseline.
It also compares the two arms' losses step by step (the first `--steps` steps at the first shape).

The baseline is the loop of the project's anchor measurement (the plain loop a diffusers user writes, "bf16
autocast eager", the setup the reference engine uses), copied here so the repository is self-contained.
One change: its posterior sample is drawn from the same seeded generator as ours, so both arms see
identical inputs. Weights are random (no hub here); the cost is the same as with SD's weights.
LPIPS uses the lpips package's VGG with a random backbone (`pnet_rand`) in both arms: same cost.

usage (with asymvae installed, e.g. `make install` then `.venv/bin/python benchmarks/...`):
  python benchmarks/train_throughput.py            # on a GPU: 256²x16 and 512²x4, then the levers
  python benchmarks/train_throughput.py --tiny     # CPU smoke run (CI): tiny model, no speed claim
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AsymmetricAutoencoderKL
from torch.utils.flop_counter import FlopCounterMode

from asymvae.losses.config import LossConfig, LPIPSConfig
from asymvae.model.build import set_trainable
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.step import TrainStep, posterior_seed

# The paper's x1.5 decoder on SD's encoder sizes.
X15 = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    down_block_out_channels=[128, 256, 512, 512],
    layers_per_down_block=2,
    up_block_types=["UpDecoderBlock2D"] * 4,
    up_block_out_channels=[192, 384, 768, 768],
    layers_per_up_block=3,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
)
TINY = dict(
    X15,
    down_block_out_channels=[32, 32, 64, 64],
    up_block_out_channels=[32, 32, 64, 64],
    layers_per_down_block=1,
    layers_per_up_block=1,
    norm_num_groups=8,
)
SEED = 0
LR = 1e-4
# Lever runs: (description, speed settings over the defaults).
LEVERS = {
    "eager": ("eager, our step (compile off, NCHW)", dict(compile_="off", channels_last="off")),
    "compile_nchw": ("compile, NCHW", dict(compile_="on", channels_last="off")),
    "compile_cl": ("compile, channels-last", dict(compile_="on", channels_last="on")),
    "cudagraphs_nchw": ("compile + CUDA graphs, NCHW", dict(compile_="on", compile_mode="reduce-overhead")),
}


def parse_shape(text: str) -> tuple[int, int]:
    """`256x16` -> (256, 16)."""
    res, _, bs = text.partition("x")
    return int(res), int(bs)


def make_lpips() -> torch.nn.Module:
    """LPIPS(vgg) with the package's linear heads and a random backbone (no download here), frozen."""
    import lpips

    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    return net.eval().requires_grad_(False)


def random_masks(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """One box hole of a quarter of the image per sample (1 = hole), as the anchor measurement."""
    m = torch.zeros(b, 1, h, w)
    for i in range(b):
        y0, x0 = torch.randint(0, h // 2, (2,), generator=gen).tolist()
        m[i, :, y0 : y0 + h // 2, x0 : x0 + w // 2] = 1.0
    return m


def make_batches(res: int, bs: int, n: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` fixed batches of images in [-1, 1] and masks, cycled by both arms."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.rand(bs, 3, res, res, generator=gen) * 2 - 1
        out.append((x.to(device), random_masks(bs, res, res, gen).to(device)))
    return out


def noise(device: str, step: int) -> torch.Generator:
    """The posterior noise of `step`, as asymvae's step draws it (seed 0, micro-step 0, rank 0)."""
    return torch.Generator(device).manual_seed(posterior_seed(SEED, step, 0, 0))


# -- the baseline: a plain diffusers + PyTorch loop (anchor_gpu.py's "bf16 autocast eager") ----------


def baseline_arm(init: dict[str, torch.Tensor], lp: torch.nn.Module, model_cfg: dict, device: str, bf16: bool):
    """Returns step(x, m, i) -> loss (a tensor) and the trainable parameter count."""
    vae = AsymmetricAutoencoderKL(**model_cfg)
    vae.load_state_dict(init)
    vae = vae.to(device)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    lp = copy.deepcopy(lp).to(device)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, fused=device == "cuda")

    def step(x: torch.Tensor, m: torch.Tensor, i: int) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            z = vae.encode(x).latent_dist.sample(generator=noise(device, i))
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            rec = vae.decode(z, image=x, mask=m).sample
            loss = F.l1_loss(rec.float(), x) + lp(rec, x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step, sum(p.numel() for p in params)


# -- ours: asymvae.training.step.TrainStep, as the trainer runs it -------------------------------------


def ours_config(bs: int, precision: str, compile_: str, channels_last: str, compile_mode: str) -> ExperimentConfig:
    """The same recipe as the baseline, as an asymvae config (only the speed settings vary)."""
    return ExperimentConfig(
        name="bench",
        model=ModelConfig(kind="asymmetric", pretrained="(built in memory)", train_post_quant_conv=True),
        loss=LossConfig(pixel="l1", pixel_weight=1.0, lpips=LPIPSConfig(weight=1.0, net="vgg")),
        optim=OptimConfig(
            lr=LR, scale_lr=False, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-8, schedule="constant",
            warmup_steps=0, max_grad_norm=None,
        ),
        train=TrainConfig(
            max_steps=10_000, batch_size=bs, mixed_precision=precision, seed=SEED, compile=compile_,
            channels_last=channels_last, compile_mode=compile_mode, progress=False,
        ),
    )  # fmt: skip


def ours_arm(init: dict[str, torch.Tensor], lp: torch.nn.Module, model_cfg: dict, bs: int, settings: dict):
    """asymvae's TrainStep on the same model and loss; returns step(x, m, i) -> loss and the step object."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    cfg = ours_config(bs, **settings)
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
    vae = AsymmetricAutoencoderKL(**model_cfg)
    vae.load_state_dict(init)
    set_trainable(vae, cfg.model)
    runner = TrainStep(cfg, acc, vae, copy.deepcopy(lp))
    runner.prepare()

    def step(x: torch.Tensor, m: torch.Tensor, i: int) -> torch.Tensor:
        return runner(x, m, i, 0)["loss"]

    return step, runner


# -- measurement --------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_arm(
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    timed: int,
    device: str,
) -> dict[str, Any]:
    """`warmup` steps (compilation happens here), then `timed` steps; losses of all steps, one sync at the end."""
    losses = []
    t0 = time.perf_counter()
    for i in range(warmup):
        losses.append(step(*batches[i % len(batches)], i))
    sync(device)
    warm_s = time.perf_counter() - t0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + timed):
        losses.append(step(*batches[i % len(batches)], i))
    sync(device)
    dt = (time.perf_counter() - t0) / timed
    bs = batches[0][0].shape[0]
    return {
        "s_per_step": dt,
        "img_per_s": bs / dt,
        "warmup_s": warm_s,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
        "losses": [float(v) for v in losses],
    }


def count_flops(step: Callable, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """FLOPs of one training step (forward, backward, optimizer), counted on eager code."""
    with FlopCounterMode(display=False) as counter:
        step(*batch, 0)
    return float(counter.get_total_flops())


def bf16_ceiling(device: str) -> float | None:
    """TFLOP/s of a large bf16 matrix product on this card (the rate the achieved figures are shared of)."""
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0) / 1e12


def free(device: str) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def loss_agreement(base: list[float], ours: list[float]) -> dict[str, float]:
    """Relative differences of the two arms' per-step losses."""
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base, ours, strict=False)]
    return {"steps": len(rel), "first_step_rel": rel[0], "mean_rel": sum(rel) / len(rel), "max_rel": max(rel)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 64², few steps")
    parser.add_argument("--steps", type=int, default=50, help="steps per arm at the first shape (loss check)")
    parser.add_argument("--timed", type=int, default=15, help="timed steps per arm at the other shapes/levers")
    parser.add_argument("--budget-s", type=float, default=480, help="skip the lever runs past this many seconds")
    parser.add_argument("--tolerance", type=float, default=0.02, help="allowed mean relative loss difference")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for train_throughput.json")
    parser.add_argument("--shapes", default="256x16,512x4", help="RESxBATCH list; the first gets the loss check")
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"lever runs, from {', '.join(LEVERS)}")
    parser.add_argument("--lever-shape", default="256x16", help="RESxBATCH of the lever runs")
    args = parser.parse_args()
    started = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    model_cfg = TINY if args.tiny else X15
    shapes = [(64, 2)] if args.tiny else [parse_shape(s) for s in args.shapes.split(",")]
    steps = 6 if args.tiny else args.steps
    timed = 3 if args.tiny else args.timed
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    import accelerate
    import diffusers

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "accelerate": accelerate.__version__,
        },
        "bf16_tflops_ceiling": bf16_ceiling(device),
        "shapes": [],
        "levers": [],
    }
    print(json.dumps({k: report[k] for k in ("device", "versions", "bf16_tflops_ceiling")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out / "train_throughput.json").write_text(json.dumps(report, indent=1))

    torch.manual_seed(0)
    init = AsymmetricAutoencoderKL(**model_cfg).state_dict()
    torch.manual_seed(0)
    lp = make_lpips()
    ceiling = report["bf16_tflops_ceiling"]
    default = dict(precision="bf16", compile_="auto", channels_last="auto", compile_mode="default")

    def describe(name: str, r: dict[str, Any], flops: float) -> dict[str, Any]:
        r["tflops"] = flops / r["s_per_step"] / 1e12
        r["share_of_ceiling"] = r["tflops"] / ceiling if ceiling else None
        share = f"{100 * r['share_of_ceiling']:.0f}%" if ceiling else "-"
        print(
            f"  {name:<34} {r['img_per_s']:8.2f} img/s {r['tflops']:7.1f} TFLOP/s {share:>5} of bf16 "
            f"peak {r['peak_gib']:6.1f} GiB  (warm-up {r['warmup_s']:.0f} s)",
            flush=True,
        )
        return r

    for n, (res, bs) in enumerate(shapes):
        batches = make_batches(res, bs, 4, device)
        first = n == 0
        warmup = 3
        timed_here = steps - warmup if first else timed
        step, n_train = baseline_arm(init, lp, model_cfg, device, bf16=False)
        flops = count_flops(step, batches[0])
        del step
        free(device)
        print(f"{res}²x{bs}: {flops / 1e12:.2f} TFLOP per step, {n_train / 1e6:.1f}M trainable parameters", flush=True)
        row: dict[str, Any] = {"res": res, "batch": bs, "tflop_per_step": flops / 1e12}
        report["shapes"].append(row)
        step, _ = baseline_arm(init, lp, model_cfg, device, bf16=True)
        measured = run_arm(step, batches, warmup, timed_here, device)
        row["baseline"] = describe("baseline (diffusers, bf16 eager)", measured, flops)
        del step
        free(device)
        save()
        step, runner = ours_arm(init, lp, model_cfg, bs, default)
        row["ours_settings"] = runner.describe()
        measured = run_arm(step, batches, warmup, timed_here, device)
        row["ours"] = describe(f"asymvae {runner.describe()}", measured, flops)
        del step, runner
        free(device)
        row["speedup"] = row["ours"]["img_per_s"] / row["baseline"]["img_per_s"]
        row["memory_ratio"] = row["ours"]["peak_gib"] / row["baseline"]["peak_gib"] if device == "cuda" else None
        print(f"  ours / baseline: {row['speedup']:.2f}x img/s", flush=True)
        if first:
            agree = loss_agreement(row["baseline"]["losses"], row["ours"]["losses"])
            agree["tolerance"] = args.tolerance
            agree["pass"] = agree["mean_rel"] <= args.tolerance
            row["loss_agreement"] = agree
            print(f"  losses over {agree['steps']} steps: {json.dumps(agree)}", flush=True)
        save()

    # The levers one by one, while the time budget lasts.
    res, bs = shapes[0] if args.tiny else parse_shape(args.lever_shape)
    batches = make_batches(res, bs, 4, device)
    flops = next((r["tflop_per_step"] * 1e12 for r in report["shapes"] if (r["res"], r["batch"]) == (res, bs)), None)
    if flops is None:
        step, _ = baseline_arm(init, lp, model_cfg, device, bf16=False)
        flops = count_flops(step, batches[0])
        del step
        free(device)
    names = ["eager"] if device == "cpu" else [n for n in args.levers.split(",") if n]
    for name in names:
        settings = dict(default, **LEVERS[name][1])
        if time.perf_counter() - started > args.budget_s:
            print(f"  skipped {name}: past the {args.budget_s:.0f} s budget", flush=True)
            report["levers"].append({"name": name, "skipped": "time budget"})
            continue
        try:
            step, runner = ours_arm(init, lp, model_cfg, bs, settings)
            r = describe(LEVERS[name][0], run_arm(step, batches, 3, timed, device), flops)
            r.pop("losses")
            report["levers"].append({"name": name, "settings": runner.describe(), "res": res, "batch": bs, **r})
            del step, runner
        except Exception as e:  # a lever that fails is reported, not fatal
            report["levers"].append({"name": name, "error": repr(e)[:500]})
            print(f"  {name}: failed: {e!r}"[:300], flush=True)
        free(device)
        save()
    report["seconds"] = time.perf_counter() - started
    save()
    print(f"done in {report['seconds']:.0f} s; results in {out / 'train_throughput.json'}", flush=True)
    if args.tiny and not report["shapes"][0]["loss_agreement"]["pass"]:
        sys.exit("our step does not compute what the baseline computes (see loss_agreement)")


if __name__ == "__main__":
    main()
