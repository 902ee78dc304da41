"""Serving speed: the mask-conditioned decoder, decoded with image and mask, against diffusers fp16 eager.

The baseline is the anchor measurement's decode (copied here so the repository is self-contained): diffusers'
`AsymmetricAutoencoderKL.decode(z, image=, mask=).sample` in fp16, eager, under inference_mode, cudnn.benchmark
on, random weights (seed 0; the cost is the same as a trained decoder's), a centred square hole. Our arms decode
a copy of the same fp16 weights through the library's path, `asymvae.model.decode.decode_latents`, after
`asymvae.model.decode_speed.apply_decode_speed` with one lever each:

  eager               no setting (must equal the baseline)
  channels_last       channels-last conv weights
  compile             torch.compile, mode default (static shapes)
  compile_cudagraphs  torch.compile, mode reduce-overhead (CUDA graphs)
  compile_autotune    torch.compile, mode max-autotune-no-cudagraphs (long compilation)
  onnx                the library's ONNX export (asymvae.export.onnx): exported, checked against PyTorch with
                      onnxruntime on the CPU, and timed on the GPU only where onnxruntime has the
                      CUDAExecutionProvider (the plain `onnxruntime` package has not; the JSON says which it had)

Per arm and batch size it reports ms per batch, img/s, the speed-up over the baseline, the first call's seconds
(compilation), and the largest absolute difference from the baseline's output and from an fp32 eager reference
on the same (fp16-rounded) weights and inputs. Parity rule: an arm passes when its difference from the fp32
reference is at most max(3 x the baseline's own fp16 difference from it, 1e-3 x the reference's largest value).
The issue's target for the x1.5 decoder at 512²: at most 24 ms at batch 1 and at least 56 img/s at batch 8.

The JSON (`--out`, default $OUT) is rewritten after every arm, so a run cut short keeps what it measured.
Note: `asymvae inpaint` loads pipelines in float32 today; this measures `decode_latents` in fp16, the precision
of the baseline.

usage (with asymvae installed, e.g. `make install` then `.venv/bin/python benchmarks/...`):
  python benchmarks/decode_throughput.py            # on a GPU: x1.5 decoder, 512², batches 1 and 8, every lever
  python benchmarks/decode_throughput.py --tiny     # CPU smoke run (CI): tiny decoder, no speed claim
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.export.onnx import OUTPUT_NAMES, export_onnx, verify_onnx
from asymvae.model.decode import decode_latents
from asymvae.model.decode_speed import DecodeSpeed, apply_decode_speed
from asymvae.model.latent_space import LatentTransform

from paper_models import DECODERS, ENCODER, TINY, free, sync

LEVERS = {
    "eager": DecodeSpeed(),
    "channels_last": DecodeSpeed(channels_last=True),
    "compile": DecodeSpeed(compile="default"),
    "compile_cudagraphs": DecodeSpeed(compile="reduce-overhead"),
    "compile_autotune": DecodeSpeed(compile="max-autotune-no-cudagraphs"),
}
# The order the arms run in; the time budget skips the ones not started in time, so the longest compile is last.
ORDER = ("eager", "channels_last", "compile", "compile_cudagraphs", "onnx", "compile_autotune")
TINY_LEVERS = ("eager", "channels_last", "onnx", "compile")
# The target for the x1.5 decoder at 512² (2x the anchor's fp16 eager figures).
TARGET_MS_BATCH1, TARGET_IMG_S_BATCH8 = 24.0, 56.0
FP16_FACTOR, FP32_FLOOR = 3.0, 1e-3


def make_inputs(batch: int, res: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Latents, an image on [-1, 1] and a mask with a centred square hole half the side (1 = hole)."""
    g = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, 4, res // 8, res // 8, generator=g)
    image = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, res, res)
    mask[..., res // 4 : 3 * res // 4, res // 4 : 3 * res // 4] = 1
    return tuple(t.to(device, dtype) for t in (z, image, mask))


def timed(fn: Callable[[], torch.Tensor], warmup: int, iters: int, device: str) -> tuple[dict[str, float], Any]:
    """The first call (compilation happens there) timed on its own, `warmup` more calls, then `iters` timed
    calls with one sync at the end; returns the times and the last call's output."""
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        out = fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn()
    sync(device)
    return {"first_call_s": first, "s_per_batch": (time.perf_counter() - t0) / iters}, out


def diffusers_decode(vae: AsymmetricAutoencoderKL, z: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> Any:
    """The baseline: diffusers' own decode with the mask branch."""
    return vae.decode(z, image=image, mask=mask).sample


def max_abs(a: Any, b: torch.Tensor) -> float:
    return float((torch.as_tensor(a).to(b.device).float() - b.float()).abs().max())


def parity(out: Any, base: torch.Tensor, ref: torch.Tensor, tolerance: float) -> dict[str, Any]:
    """Differences of an arm's output from the baseline's and from the fp32 reference, and the verdict."""
    vs_ref = max_abs(out, ref)
    return {
        "max_abs_vs_baseline": max_abs(out, base),
        "max_abs_vs_fp32": vs_ref,
        "tolerance": tolerance,
        "pass": vs_ref <= tolerance,
    }


def speed(t: dict[str, float], batch: int, base: dict[str, Any] | None) -> dict[str, Any]:
    r = {"ms_per_batch": 1e3 * t["s_per_batch"], "img_per_s": batch / t["s_per_batch"], **t}
    if base is not None:
        r["speedup"] = base["ms_per_batch"] / r["ms_per_batch"]
    return r


def torch_arm(
    vae: AsymmetricAutoencoderKL,
    setting: DecodeSpeed,
    inputs: dict[int, tuple[torch.Tensor, ...]],
    ref: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    device: str,
) -> dict[str, Any]:
    """decode_latents on a copy of `vae` with `setting` applied, at every batch size."""
    ours = copy.deepcopy(vae)
    apply_decode_speed(ours, setting)
    row: dict[str, Any] = {"settings": setting.__dict__, "batches": {}}
    for batch, (z, image, mask) in inputs.items():
        with torch.inference_mode():
            t, out = timed(lambda z=z, i=image, m=mask: decode_latents(ours, z, i, m), 2, args.iters, device)
        r = ref[batch]
        row["batches"][str(batch)] = {
            **speed(t, batch, r["baseline"]),
            **parity(out, r["base_out"], r["fp32_out"], r["tolerance"]),
        }
        print(f"  batch {batch}: {json.dumps(row['batches'][str(batch)])}", flush=True)
    return row


def onnx_arm(
    vae32: AsymmetricAutoencoderKL,
    inputs: dict[int, tuple[torch.Tensor, ...]],
    ref: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    device: str,
) -> dict[str, Any]:
    """Export with the library's exporter, check on the CPU, time on the GPU where onnxruntime can."""
    import onnxruntime as ort

    cpu = copy.deepcopy(vae32).cpu()
    providers = ort.get_available_providers()
    row: dict[str, Any] = {"onnxruntime": ort.__version__, "providers": providers}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decoder.onnx"
        t0 = time.perf_counter()
        export_onnx(cpu, path)
        row["export_s"] = time.perf_counter() - t0
        checks = [c.as_dict() for c in verify_onnx(cpu, path)]
        for c in checks:
            c["tolerance"] = FP32_FLOOR * max(1.0, c["max_abs_value"])
            c["pass"] = c["max_abs_error"] <= c["tolerance"]
        row["cpu_parity"] = checks
        print(f"  exported in {row['export_s']:.0f} s; CPU parity: {json.dumps(checks)}", flush=True)
        if device != "cuda" or "CUDAExecutionProvider" not in providers:
            row["gpu"] = (
                f"not measured: onnxruntime {ort.__version__} has providers {providers}, no CUDAExecutionProvider "
                "(the GPU build, onnxruntime-gpu, is not installed)"
                if device == "cuda"
                else "not measured: no GPU"
            )
            print(f"  {row['gpu']}", flush=True)
            return row
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        row["session_providers"] = session.get_providers()
        transform = LatentTransform.of(vae32.config)
        row["batches"] = {}
        for batch, (z, image, mask) in inputs.items():
            feed = {
                "latent": transform.from_vae(z.float()).cpu().numpy(),
                "image": image.float().cpu().numpy(),
                "mask": mask.float().cpu().numpy(),
            }
            t, out = timed(lambda feed=feed: session.run(list(OUTPUT_NAMES), feed)[0], 2, args.iters, "cpu")
            r = ref[batch]
            row["batches"][str(batch)] = {
                **speed(t, batch, r["baseline"]),
                "note": "float32 graph; numpy in and out, so host<->device copies are included",
                **parity(out, r["base_out"], r["fp32_out"], r["tolerance"]),
            }
            print(f"  batch {batch}: {json.dumps(row['batches'][str(batch)])}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny decoder, 64², float32, few calls")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for decode_throughput.json")
    parser.add_argument(
        "--budget-s", type=float, default=150, help="start no arm after this many seconds (one started runs to its end)"
    )
    parser.add_argument("--levers", default=None, help=f"arms to run, from {', '.join(ORDER)} (default: all)")
    parser.add_argument("--batches", default=None, help="batch sizes (default 1,8; --tiny: 2)")
    parser.add_argument("--res", type=int, default=None, help="image side in px (default 512; --tiny: 64)")
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="x1.5", help="decoder size")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per arm and batch (default 20)")
    args = parser.parse_args()
    started = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float16 if device == "cuda" else torch.float32
    res = args.res or (64 if args.tiny else 512)
    batches = [int(b) for b in (args.batches or ("2" if args.tiny else "1,8")).split(",")]
    args.iters = args.iters or (2 if args.tiny else 20)
    names = [n for n in (args.levers.split(",") if args.levers else TINY_LEVERS if args.tiny else ORDER) if n]
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        parser.error(f"unknown levers {unknown}; choose from {', '.join(ORDER)}")
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        # The parity reference is full fp32: no TF32 in its convolutions and matmuls (the fp16 arms are unaffected).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    import diffusers
    import onnx
    import onnxruntime

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cuda": torch.version.cuda,
        },
        "setup": {
            "decoder": "tiny" if args.tiny else args.decoder,
            "res": res,
            "batches": batches,
            "dtype": str(dtype),
            "iters": args.iters,
            "levers": names,
        },
        "parity_rule": f"max|arm - fp32 eager| <= max({FP16_FACTOR} x max|baseline - fp32 eager|, "
        f"{FP32_FLOOR} x max|fp32 eager|)",
        "baseline": {},
        "arms": {},
    }
    print(json.dumps({k: report[k] for k in ("device", "versions", "setup")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out / "decode_throughput.json").write_text(json.dumps(report, indent=1))

    torch.manual_seed(0)
    config = TINY if args.tiny else dict(ENCODER, **DECODERS[args.decoder])
    vae = AsymmetricAutoencoderKL(**config).to(device, dtype).eval()
    vae32 = copy.deepcopy(vae).float()  # the same (rounded) weights in fp32: the parity reference
    inputs = {b: make_inputs(b, res, device, dtype) for b in batches}
    ref: dict[int, dict[str, Any]] = {}
    print(f"baseline: diffusers {dtype} eager vae.decode(z, image=, mask=)", flush=True)
    for batch, (z, image, mask) in inputs.items():
        with torch.inference_mode():
            t, base_out = timed(functools.partial(diffusers_decode, vae, z, image, mask), 2, args.iters, device)
            fp32_out = vae32.decode(z.float(), image=image.float(), mask=mask.float()).sample
        base_err = max_abs(base_out, fp32_out)
        tolerance = max(FP16_FACTOR * base_err, FP32_FLOOR * float(fp32_out.abs().max()))
        row = {
            **speed(t, batch, None),
            "finite": bool(torch.isfinite(base_out).all()),
            "max_abs_vs_fp32": base_err,
            "tolerance_for_arms": tolerance,
        }
        report["baseline"][str(batch)] = row
        ref[batch] = {"baseline": row, "base_out": base_out, "fp32_out": fp32_out, "tolerance": tolerance}
        print(f"  batch {batch}: {json.dumps(row)}", flush=True)
    save()

    for name in names:
        if time.perf_counter() - started > args.budget_s:
            print(f"{name}: skipped, past the {args.budget_s:.0f} s budget", flush=True)
            report["arms"][name] = {"skipped": "time budget"}
            continue
        print(f"{name}:", flush=True)
        t0 = time.perf_counter()
        try:
            if name == "onnx":
                report["arms"][name] = onnx_arm(vae32, inputs, ref, args, device)
            else:
                report["arms"][name] = torch_arm(vae, LEVERS[name], inputs, ref, args, device)
        except Exception as e:  # a lever that fails is reported, not fatal
            report["arms"][name] = {"error": repr(e)[:1000]}
            print(f"  failed: {e!r}"[:500], flush=True)
        report["arms"][name]["arm_s"] = time.perf_counter() - t0
        free(device)
        save()

    if not args.tiny and args.decoder == "x1.5" and res == 512:
        report["target"] = target(report)
        print(f"target: {json.dumps(report['target'])}", flush=True)
    report["seconds"] = time.perf_counter() - started
    save()
    print(f"done in {report['seconds']:.0f} s; results in {out / 'decode_throughput.json'}", flush=True)
    failed = [n for n, arm in report["arms"].items() if any(not b["pass"] for b in arm.get("batches", {}).values())]
    if args.tiny and failed:
        sys.exit(f"arms whose outputs differ from the baseline's beyond the parity rule: {failed}")


def target(report: dict[str, Any]) -> dict[str, Any]:
    """Per measured arm: whether it meets the issue's target (batch 1 ms, batch 8 img/s, outputs in parity)."""
    result: dict[str, Any] = {"ms_batch1_at_most": TARGET_MS_BATCH1, "img_per_s_batch8_at_least": TARGET_IMG_S_BATCH8}
    for name, arm in report["arms"].items():
        b1, b8 = arm.get("batches", {}).get("1"), arm.get("batches", {}).get("8")
        if b1 is None or b8 is None:
            continue
        result[name] = {
            "batch1_ms": b1["ms_per_batch"],
            "batch8_img_per_s": b8["img_per_s"],
            "met": b1["ms_per_batch"] <= TARGET_MS_BATCH1
            and b8["img_per_s"] >= TARGET_IMG_S_BATCH8
            and b1["pass"]
            and b8["pass"],
        }
    return result


if __name__ == "__main__":
    main()
