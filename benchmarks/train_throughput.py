"""Training speed: the plain diffusers loop (the baseline) against asymvae's own training step.

Both arms train the same asymmetric decoder on SD's frozen encoder with the same loss, AdamW and bf16
autocast, from the same initial weights, on the same batches, with the same posterior noise; they run one
after the other in this process. `--recipe` picks what is trained:

- `anchor` (default): the x1.5 decoder (160M trainable parameters), L1 + LPIPS(vgg), posterior sample, no
  clipping: the project's anchor measurement, at 256²x16 and 512²x4, then the speed levers one by one;
- `reference-x2`: the reference engine's own recipe: the x2 decoder (372M), L2 + 0.1 LPIPS(alex) on the clamped
  output, the posterior's mode, gradients clipped to norm 1.0, 512²x4; ours with its defaults and with
  gradient checkpointing (`model.gradient_checkpointing`), for peak memory at no lower throughput.

Per arm it prints img/s, achieved TFLOP/s (FLOPs of one step counted with torch.utils.flop_counter on the eager
step, in bf16 on a GPU), the share of the bf16 matmul rate measured on the same card, peak memory, and
ours / baseline. It also compares the arms' losses step by step (the first `--steps` steps at the first shape).

The baseline is the loop of the project's anchor measurements (the plain loop a diffusers user writes, "bf16
autocast eager", the setup the reference engine uses; for `reference-x2` that engine's loss, clamp and
clipping), copied here so the repository is self-contained.
One change: its posterior sample is drawn from the same seeded generator as ours, so both arms see
identical inputs. Weights are random (no hub here); the cost is the same as with SD's weights.
LPIPS uses the lpips package's VGG with a random backbone (`pnet_rand`) in both arms: same cost.

usage (with asymvae installed, e.g. `make install` then `.venv/bin/python benchmarks/...`):
  python benchmarks/train_throughput.py                         # on a GPU: 256²x16 and 512²x4, then the levers
  python benchmarks/train_throughput.py --recipe reference-x2   # on a GPU: the x2 decoder's memory
  python benchmarks/train_throughput.py --tiny                  # CPU smoke run (CI): tiny model, no speed claim
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AsymmetricAutoencoderKL
from torch.utils.flop_counter import FlopCounterMode

from asymvae.losses.config import LossConfig, LPIPSConfig
from asymvae.model.build import set_trainable
from asymvae.model.checkpointing import enable_gradient_checkpointing
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.update import Update, posterior_seed

from paper_models import TINY, X2, X15, free, sync

SEED = 0


@dataclass(frozen=True)
class Recipe:
    """What both arms train: the model, the loss and the optimiser settings, and the default shapes."""

    model: dict
    pixel: str  # "l1" or "l2"
    lpips_net: str
    lpips_weight: float
    clamp_for_lpips: bool  # the baseline's LPIPS sees the output clamped to [-1, 1] (ours: unclamped)
    sample_posterior: bool  # False: the posterior's mode
    max_grad_norm: float | None
    lr: float
    shapes: str
    levers: str  # the lever runs after the shapes (at --lever-shape), comma-separated names from LEVERS
    extra_arms: tuple[str, ...]  # more "ours" arms at every shape, from ARMS


RECIPES = {
    "anchor": Recipe(
        X15, "l1", "vgg", 1.0, False, True, None, 1e-4, "256x16,512x4", "cudagraphs_nchw,max_autotune", ()
    ),
    "reference-x2": Recipe(X2, "l2", "alex", 0.1, True, False, 1.0, 1e-5, "512x4", "", ("checkpointing",)),
}
# Lever runs: (description, speed settings over the defaults).
LEVERS = {
    "eager": ("eager, our step (compile off, NCHW)", dict(compile_="off", channels_last="off")),
    "compile_nchw": ("compile, NCHW", dict(compile_="on", channels_last="off")),
    "compile_cl": ("compile, channels-last", dict(compile_="on", channels_last="on")),
    "cudagraphs_nchw": ("compile + CUDA graphs, NCHW", dict(compile_="on", compile_mode="reduce-overhead")),
    "max_autotune": (
        "compile max-autotune (Triton conv/matmul templates), no CUDA graphs",
        dict(compile_="on", compile_mode="max-autotune-no-cudagraphs"),
    ),
    "max_autotune_cudagraphs": (
        "compile max-autotune + CUDA graphs",
        dict(compile_="on", compile_mode="max-autotune"),
    ),
}
# Extra arms of ours measured at every shape of a recipe: (description, settings over the defaults).
ARMS = {"checkpointing": ("asymvae + gradient checkpointing", dict(checkpointing=True))}


def parse_shape(text: str) -> tuple[int, int]:
    """`256x16` -> (256, 16)."""
    res, _, bs = text.partition("x")
    return int(res), int(bs)


def make_lpips(net: str) -> torch.nn.Module:
    """LPIPS(`net`) with the package's linear heads and a random backbone (no download here), frozen."""
    import lpips

    net = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
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


def baseline_arm(
    init: dict[str, torch.Tensor], lp: torch.nn.Module, model_cfg: dict, device: str, bf16: bool, recipe: Recipe
):
    """Returns step(x, m, i) -> loss (a tensor) and the trainable parameter count."""
    vae = AsymmetricAutoencoderKL(**model_cfg)
    vae.load_state_dict(init)
    vae = vae.to(device)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    lp = copy.deepcopy(lp).to(device)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, fused=device == "cuda")
    pixel_loss = F.l1_loss if recipe.pixel == "l1" else F.mse_loss

    def step(x: torch.Tensor, m: torch.Tensor, i: int) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator=noise(device, i)) if recipe.sample_posterior else posterior.mode()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            rec = vae.decode(z, image=x, mask=m).sample
            seen = rec.clamp(-1, 1) if recipe.clamp_for_lpips else rec
            loss = pixel_loss(rec.float(), x) + recipe.lpips_weight * lp(seen, x).mean()
        loss.backward()
        if recipe.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step, sum(p.numel() for p in params)


# -- ours: asymvae.training.update.Update, as the trainer runs it ---------------------------------------


def ours_config(
    bs: int,
    recipe: Recipe,
    precision: str,
    compile_: str,
    channels_last: str,
    compile_mode: str,
    checkpointing: bool = False,
) -> ExperimentConfig:
    """The same recipe as the baseline, as an asymvae config (only the speed settings vary)."""
    return ExperimentConfig(
        name="bench",
        model=ModelConfig(
            kind="asymmetric", pretrained="(built in memory)", train_post_quant_conv=True,
            sample_posterior=recipe.sample_posterior, gradient_checkpointing=checkpointing,
        ),
        loss=LossConfig(
            pixel=recipe.pixel, pixel_weight=1.0, lpips=LPIPSConfig(weight=recipe.lpips_weight, net=recipe.lpips_net)
        ),
        optim=OptimConfig(
            lr=recipe.lr, scale_lr=False, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-8, schedule="constant",
            warmup_steps=0, max_grad_norm=recipe.max_grad_norm,
        ),
        train=TrainConfig(
            max_steps=10_000, batch_size=bs, mixed_precision=precision, seed=SEED, compile=compile_,
            channels_last=channels_last, compile_mode=compile_mode, progress=False,
        ),
    )  # fmt: skip


def ours_arm(
    init: dict[str, torch.Tensor], lp: torch.nn.Module, model_cfg: dict, bs: int, recipe: Recipe, settings: dict
):
    """asymvae's Update on the same model and loss; returns step(x, m, i) -> loss and the step object."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    cfg = ours_config(bs, recipe, **settings)
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
    vae = AsymmetricAutoencoderKL(**model_cfg)
    vae.load_state_dict(init)
    set_trainable(vae, cfg.model)
    if cfg.model.gradient_checkpointing:  # as build_vae does
        enable_gradient_checkpointing(vae.decoder)
    runner = Update(cfg, acc, vae, copy.deepcopy(lp))
    runner.prepare()

    def step(x: torch.Tensor, m: torch.Tensor, i: int) -> torch.Tensor:
        return runner(x, m, i, 0)["loss"]

    return step, runner


# -- measurement --------------------------------------------------------------------------------------


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


def loss_agreement(base: list[float], ours: list[float]) -> dict[str, float]:
    """Relative differences of the two arms' per-step losses."""
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base, ours, strict=False)]
    return {"steps": len(rel), "first_step_rel": rel[0], "mean_rel": sum(rel) / len(rel), "max_rel": max(rel)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 64², few steps")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="anchor", help="what both arms train")
    parser.add_argument("--steps", type=int, default=50, help="steps per arm at the first shape (loss check)")
    parser.add_argument("--timed", type=int, default=15, help="timed steps per arm at the other shapes/levers")
    parser.add_argument("--budget-s", type=float, default=480, help="start no lever run past this many seconds")
    parser.add_argument("--tolerance", type=float, default=0.02, help="allowed mean relative loss difference")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the JSON report")
    parser.add_argument("--shapes", help="RESxBATCH list; the first gets the loss check (default: the recipe's)")
    parser.add_argument("--levers", help=f"lever runs, from {', '.join(LEVERS)} (default: the recipe's; '' for none)")
    parser.add_argument("--lever-shape", default="256x16", help="RESxBATCH of the lever runs")
    args = parser.parse_args()
    started = time.perf_counter()
    recipe = RECIPES[args.recipe]
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    model_cfg = TINY if args.tiny else recipe.model
    shapes = [(64, 2)] if args.tiny else [parse_shape(s) for s in (args.shapes or recipe.shapes).split(",")]
    steps = 6 if args.tiny else args.steps
    timed = 3 if args.tiny else args.timed
    levers = recipe.levers if args.levers is None else args.levers
    if device == "cpu":
        levers = "eager" if levers else ""
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    import accelerate
    import diffusers

    report: dict[str, Any] = {
        "recipe": args.recipe,
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
    print(json.dumps({k: report[k] for k in ("recipe", "device", "versions", "bf16_tflops_ceiling")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "train_throughput.json" if args.recipe == "anchor" else f"train_throughput_{args.recipe}.json"

    def save() -> None:
        (out / name).write_text(json.dumps(report, indent=1))

    torch.manual_seed(0)
    init = AsymmetricAutoencoderKL(**model_cfg).state_dict()
    torch.manual_seed(0)
    lp = make_lpips(recipe.lpips_net)
    ceiling = report["bf16_tflops_ceiling"]
    default = dict(precision="bf16", compile_="auto", channels_last="auto", compile_mode="default")

    def describe(label: str, r: dict[str, Any], flops: float) -> dict[str, Any]:
        r["tflops"] = flops / r["s_per_step"] / 1e12
        r["share_of_ceiling"] = r["tflops"] / ceiling if ceiling else None
        share = f"{100 * r['share_of_ceiling']:.0f}%" if ceiling else "-"
        print(
            f"  {label:<34} {r['img_per_s']:8.2f} img/s {r['tflops']:7.1f} TFLOP/s {share:>5} of bf16 "
            f"peak {r['peak_gib']:6.1f} GiB  (warm-up {r['warmup_s']:.0f} s)",
            flush=True,
        )
        return r

    def flops_of(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
        # Counted in bf16 on a GPU: the same FLOPs as fp32, without fp32's memory (132 GiB for x2 at 512²x4).
        step, n_train = baseline_arm(init, lp, model_cfg, device, device == "cuda", recipe)
        flops = count_flops(step, batches[0])
        del step
        free(device)
        return flops, n_train

    for n, (res, bs) in enumerate(shapes):
        batches = make_batches(res, bs, 4, device)
        first = n == 0
        warmup = 3
        timed_here = steps - warmup if first else timed
        flops, n_train = flops_of(batches)
        print(f"{res}²x{bs}: {flops / 1e12:.2f} TFLOP per step, {n_train / 1e6:.1f}M trainable parameters", flush=True)
        row: dict[str, Any] = {"res": res, "batch": bs, "tflop_per_step": flops / 1e12, "arms": {}}
        report["shapes"].append(row)
        step, _ = baseline_arm(init, lp, model_cfg, device, True, recipe)
        measured = run_arm(step, batches, warmup, timed_here, device)
        row["baseline"] = describe("baseline (diffusers, bf16 eager)", measured, flops)
        del step
        free(device)
        save()
        arms = {"ours": ("asymvae", {}), **{a: ARMS[a] for a in recipe.extra_arms}}
        for arm, (label, extra) in arms.items():
            step, runner = ours_arm(init, lp, model_cfg, bs, recipe, dict(default, **extra))
            measured = run_arm(step, batches, warmup, timed_here, device)
            r = describe(f"{label} {runner.describe()}", measured, flops)
            r["settings"] = runner.describe() | extra
            del step, runner
            free(device)
            r["speedup"] = r["img_per_s"] / row["baseline"]["img_per_s"]
            r["memory_ratio"] = r["peak_gib"] / row["baseline"]["peak_gib"] if device == "cuda" else None
            print(f"  {arm} / baseline: {r['speedup']:.2f}x img/s", flush=True)
            if first:
                agree = loss_agreement(row["baseline"]["losses"], r["losses"])
                agree["tolerance"] = args.tolerance
                agree["pass"] = agree["mean_rel"] <= args.tolerance
                if recipe.clamp_for_lpips:  # the baseline's LPIPS sees clamped outputs, ours does not
                    agree["note"] = "informative only: the baseline clamps the output for LPIPS"
                r["loss_agreement"] = agree
                print(f"  losses over {agree['steps']} steps: {json.dumps(agree)}", flush=True)
            row["arms"][arm] = r
            save()

    # The levers one by one, while the time budget lasts.
    res, bs = shapes[0] if args.tiny else parse_shape(args.lever_shape)
    batches = make_batches(res, bs, 4, device)
    known = {(r["res"], r["batch"]): r["tflop_per_step"] * 1e12 for r in report["shapes"]}
    flops = known.get((res, bs)) or (flops_of(batches)[0] if levers else 0.0)
    for lever in [n for n in levers.split(",") if n]:
        settings = dict(default, **LEVERS[lever][1])
        if time.perf_counter() - started > args.budget_s:
            print(f"  skipped {lever}: past the {args.budget_s:.0f} s budget", flush=True)
            report["levers"].append({"name": lever, "skipped": "time budget"})
            continue
        try:
            step, runner = ours_arm(init, lp, model_cfg, bs, recipe, settings)
            r = describe(LEVERS[lever][0], run_arm(step, batches, 3, timed, device), flops)
            r.pop("losses")
            report["levers"].append({"name": lever, "settings": runner.describe(), "res": res, "batch": bs, **r})
            del step, runner
        except Exception as e:  # a lever that fails is reported, not fatal
            report["levers"].append({"name": lever, "error": repr(e)[:500]})
            print(f"  {lever}: failed: {e!r}"[:300], flush=True)
        free(device)
        save()
    report["seconds"] = time.perf_counter() - started
    save()
    print(f"done in {report['seconds']:.0f} s; results in {out / name}", flush=True)
    failed = [a for a, v in report["shapes"][0]["arms"].items() if not v["loss_agreement"]["pass"]]
    if args.tiny and not recipe.clamp_for_lpips and failed:
        sys.exit(f"our step does not compute what the baseline computes: {failed} (see loss_agreement)")


if __name__ == "__main__":
    main()
