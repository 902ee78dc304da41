"""The serving overhead on the CPU: `asymvae serve` (KServe's Python model server) against an in-process decode.

In one run, with one model, on the CPU (float32, as the predictor serves there):

1. latency at 512² (`--res`), batch 1: `--requests` requests through the v2 client with binary payloads
   (`asymvae.serving.client.infer`), each followed by the same decode in this process
   (`asymvae.model.decode.decode_latents` after the predictor's latent transform), after `--warmup` of each;
   median and p90 of each, their ratio and difference (the serving overhead); the largest absolute difference
   between the served and the in-process image;
2. throughput at 512²: `--clients` threads each sending `--rounds` requests at once (the server merges
   concurrent requests into batches, `--max-batch-size`), against in-process decodes of batches of `--clients`
   images; img/s of each and the requests per decode the server's `/metrics` report;
3. payloads at 512²: request and answer bytes of the binary tensor extension and of JSON
   (`asymvae.serving.payload.encode_request`, the client's own encoder) and the median seconds per request of
   each (`--payload-requests` each, client encoding and decoding included);
4. memory at 2048² (`--large`): a fresh server per mode decodes one image, tiled (the server's default
   `--tile-above`, `--tile`, `--tile-overlap`) and whole (`--tile-above` = the image side); the server
   process's peak resident set (VmHWM in /proc/PID/status) after loading and after the decode, the decode's
   seconds, and the largest difference between the two served images. A server that dies during the decode
   (e.g. killed for memory) is reported with its exit status and the highest peak read before it died.

The server runs in a subprocess on a free loopback port, as `tests/test_serve.py` starts it; client and server
share the machine's cores. The model: `--model DIR` (an exported diffusers folder), or one built here with
random weights (seed 0; time and memory do not depend on the weight values), `--decoder`:

  toy    SD's layout (4 levels, 8x, the mask branch) at widths 32-64, 1 res layer per block, 0.85M decoder
         parameters (benchmarks/paper_models.py TINY). The default: the whole run takes under ten minutes on 2 cores.
  x1.5   SD's encoder with the paper's x1.5 decoder, 160.1M decoder parameters: tens of seconds per 512² image on
         a 2-core CPU, so the whole run takes hours there (use fewer --requests and --rounds); whether its
         whole-image 2048² decode fits in the machine's memory is what the memory part then shows.
  x2     the paper's x2 decoder (372M).

The JSON (`--out`) holds every figure with the machine, the date and the settings; a table is printed at the end.

usage (with the serve extra installed: pip install 'asymvae[serve]'):
  python benchmarks/serve_throughput.py                    # toy decoder, 512², 2048², 4 clients
  python benchmarks/serve_throughput.py --decoder x1.5     # the paper's decoder (slow on a CPU)
  python benchmarks/serve_throughput.py --model DIR        # an exported diffusers folder
  python benchmarks/serve_throughput.py --tiny             # smoke run (tests): 64², 128², few requests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.model.decode import decode_latents
from asymvae.model.files import load_vae
from asymvae.model.latent_space import LatentTransform
from asymvae.serving.client import (
    DECODER_OUTPUT,
    ModelIO,
    ServingError,
    decoder_inputs,
    fetch_model_io,
    infer,
    model_url,
    wait_ready,
)
from asymvae.serving.config import ServeConfig
from asymvae.serving.payload import encode_request
from asymvae.storage.http import request
from asymvae.storage.local_s3 import free_ports

from paper_models import DECODERS, ENCODER, TINY

MODEL = "asymvae_decoder"
STARTUP_S = 300.0
TIMEOUT_S = 3600.0
"""Per request: a whole 2048² decode of a large model on a CPU takes many minutes."""
TINY_TILE = ("--tile-above", "64", "--tile", "64", "--tile-overlap", "32")
"""--tiny: images above 64 px decode in 64 px tiles (the 128² image: 3 x 3 tiles), as tests/test_serve.py."""


def _status_kib(pid: int, key: str) -> int | None:
    """A figure of /proc/PID/status in bytes (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, flags=re.M)
    return int(found.group(1)) * 1024 if found else None


@dataclass
class Server:
    """A running `asymvae serve` subprocess."""

    proc: subprocess.Popen
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples at `/metrics`."""
        text = request("GET", f"{self.url}/metrics", None, {}, 30.0).body.decode()
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M))


@contextmanager
def served(model: Path, options: list[str], threads: int, work: Path) -> Iterator[Server]:
    """`asymvae serve MODEL` on a free loopback port (no gRPC), once it answers ready; stopped at the end."""
    (port,) = free_ports(1)
    log = work / f"server_{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "asymvae", "serve", str(model), "--name", MODEL, "--http-port", str(port),
            "--grpc-port", "0", "--device", "cpu", *options]  # fmt: skip
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        try:
            wait_ready(server.url, STARTUP_S, proc)
        except ServingError as e:
            raise SystemExit(f"asymvae serve: {e}:\n{server.tail()}") from None
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_model(decoder: str, folder: Path) -> dict[str, Any]:
    """An AsymmetricAutoencoderKL of `decoder`'s size with random weights (seed 0), saved to `folder`."""
    config = TINY if decoder == "toy" else dict(ENCODER, **DECODERS[decoder])
    torch.manual_seed(0)
    vae = AsymmetricAutoencoderKL(**config)
    vae.save_pretrained(folder)
    return {"built": decoder, "weights": "random (seed 0): time and memory do not depend on the weight values",
            "decoder_parameters": sum(p.numel() for p in vae.decoder.parameters())}  # fmt: skip


class InProcess:
    """The served model decoded in this process, as the predictor does on the CPU (float32, inference mode)."""

    def __init__(self, model: Path) -> None:
        self.vae = load_vae(model, require=AsymmetricAutoencoderKL).float()
        self.transform = LatentTransform.of(self.vae.config)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        with torch.inference_mode():
            return decode_latents(self.vae, self.transform.to_vae(t["latent"]), t["image"], t["mask"]).numpy()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _spread(seconds: list[float]) -> dict[str, float]:
    """Median and p90 (nearest rank) in ms."""
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, max(0, int(np.ceil(0.9 * len(ordered))) - 1))]
    return {"median_ms": 1e3 * statistics.median(ordered), "p90_ms": 1e3 * p90, "n": len(ordered)}


def latency(server: Server, io: ModelIO, local: InProcess, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 requests, each served then decoded in process on the same inputs (interleaved)."""
    times: dict[str, list[float]] = {"served": [], "in_process": []}
    worst = 0.0
    for i in range(args.warmup + args.requests):
        inputs = decoder_inputs(io, args.res, args.res, 1, seed=i)
        t_served, answer = _timed(lambda inputs=inputs: infer(server.url, io, inputs, None, TIMEOUT_S, "binary"))
        t_local, sample = _timed(lambda inputs=inputs: local(inputs))
        worst = max(worst, float(np.abs(answer[DECODER_OUTPUT] - sample).max()))
        if i >= args.warmup:
            times["served"].append(t_served)
            times["in_process"].append(t_local)
    result = {k: _spread(v) for k, v in times.items()}
    s, p = result["served"], result["in_process"]
    result["overhead"] = {
        "median_ratio": s["median_ms"] / p["median_ms"],
        "median_ms": s["median_ms"] - p["median_ms"],
        "p90_ratio": s["p90_ms"] / p["p90_ms"],
    }
    result["max_abs_diff_served_vs_in_process"] = worst
    return result


def throughput(server: Server, io: ModelIO, local: InProcess, args: argparse.Namespace) -> dict[str, Any]:
    """`clients` threads x `rounds` concurrent batch-1 requests against in-process batches of `clients` images."""
    c, rounds = args.clients, args.rounds
    requests = [decoder_inputs(io, args.res, args.res, 1, seed=1000 + i) for i in range(c * rounds)]
    batch = {k: np.concatenate([r[k] for r in requests[:c]]) for k in requests[0]}

    def client(k: int) -> None:
        for inputs in requests[k::c]:
            infer(server.url, io, inputs, None, TIMEOUT_S, "binary")

    infer(server.url, io, requests[0], None, TIMEOUT_S, "binary")  # warm-up
    decodes = server.metric("asymvae_decode_batch_requests_count")
    merged = server.metric("asymvae_decode_batch_requests_sum")
    with ThreadPoolExecutor(c) as pool:
        t_served, _ = _timed(lambda: list(pool.map(client, range(c))))
    decodes = server.metric("asymvae_decode_batch_requests_count") - decodes
    merged = server.metric("asymvae_decode_batch_requests_sum") - merged
    local(batch)  # warm-up at the batch's shape
    t_local, out = _timed(lambda: [local(batch) for _ in range(rounds)])
    images = c * rounds
    served_rate, local_rate = images / t_served, images / t_local
    return {
        "clients": c,
        "images": images,
        "served_img_per_s": served_rate,
        "in_process_img_per_s": local_rate,
        "in_process_batch": c,
        "ratio": served_rate / local_rate,
        "server_decodes": decodes,
        "requests_per_decode": merged / decodes if decodes else None,
        "finite": bool(np.isfinite(out[-1]).all()),
    }


def payloads(server: Server, io: ModelIO, args: argparse.Namespace) -> dict[str, Any]:
    """Bytes on the wire and seconds per request, binary tensors against JSON numbers."""
    inputs = decoder_inputs(io, args.res, args.res, 1, seed=2000)
    datatypes = {name: io.input(name).datatype for name in inputs}
    result: dict[str, Any] = {
        "raw_request_tensor_bytes": sum(a.nbytes for a in inputs.values()),
        "raw_answer_tensor_bytes": 4 * 3 * args.res**2,
    }
    modes = ("binary", "json")
    for mode in modes:
        body, headers = encode_request(inputs, datatypes, (DECODER_OUTPUT,), mode == "binary")
        answer = request("POST", model_url(server.url, MODEL) + "/infer", body, headers, TIMEOUT_S)
        if answer.status != 200:
            raise SystemExit(f"{mode} request answered HTTP {answer.status}: {answer.body[:300]!r}")
        result[mode] = {"request_bytes": len(body), "answer_bytes": len(answer.body)}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.payload_requests):  # interleaved, so that both modes see the same machine
        for mode in modes:
            seconds[mode].append(_timed(lambda mode=mode: infer(server.url, io, inputs, None, TIMEOUT_S, mode))[0])
    for mode in modes:
        result[mode].update(_spread(seconds[mode]))
    b, j = result["binary"], result["json"]
    result["json_over_binary"] = {
        "request_bytes": j["request_bytes"] / b["request_bytes"],
        "answer_bytes": j["answer_bytes"] / b["answer_bytes"],
        "median_time": j["median_ms"] / b["median_ms"],
    }
    return result


def peak_memory(model: Path, options: list[str], args: argparse.Namespace, work: Path) -> tuple[dict, Any]:
    """One `--large`² decode on a fresh server; its peak RSS, sampled while it runs (kept if the server dies)."""
    with served(model, options, args.threads, work) as server:
        pid = server.proc.pid
        loaded = _status_kib(pid, "VmHWM")
        io = fetch_model_io(server.url, MODEL)
        inputs = decoder_inputs(io, args.large, args.large, 1, seed=3000)
        seen = [loaded]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                peak = _status_kib(pid, "VmHWM")
                if peak is None:
                    return
                seen.append(peak)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        start = time.perf_counter()
        try:
            out = infer(server.url, io, inputs, None, TIMEOUT_S, "binary")[DECODER_OUTPUT]
            failure = None
        except Exception as e:  # e.g. the server killed for memory: say so, with what was measured before
            out, failure = None, f"{type(e).__name__}: {e}"[:500]
        seconds = time.perf_counter() - start
        stop.set()
        watcher.join()
        final = _status_kib(pid, "VmHWM")
        peak = max(p for p in [*seen, final] if p is not None)
        result = {"server_options": options, "peak_rss_after_load": loaded, "peak_rss": peak,
                  "growth": peak - loaded, "seconds": seconds}  # fmt: skip
        if failure is not None:
            time.sleep(1)
            result.update(failed=failure, server_exit=server.proc.poll(), server_log_tail=server.tail()[-1000:])
            result["note"] = "peak_rss is the highest read before the server failed: a lower bound"
        return result, out


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
    mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), flags=re.M)
    return {
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "gpu": "none used (the benchmark serves and decodes on the CPU)",
        "load_average_at_start": os.getloadavg(),
        "versions": {p: version(p) for p in ("torch", "diffusers", "kserve", "tritonclient", "asymvae")},
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table(r: dict[str, Any]) -> str:
    """The printed summary."""
    lat, thr, pay, mem = r["latency"], r["throughput"], r["payloads"], r["memory"]
    res, large = r["setup"]["res"], r["setup"]["large"]
    s, p, o = lat["served"], lat["in_process"], lat["overhead"]
    lines = [
        f"model: {r['model']['what']}",
        "",
        f"| {res}², batch 1 | served (binary) | in-process | served / in-process | overhead |",
        "|---|---|---|---|---|",
        f"| latency median | {s['median_ms']:.1f} ms | {p['median_ms']:.1f} ms | {o['median_ratio']:.2f}x "
        f"| {o['median_ms']:+.1f} ms |",
        f"| latency p90 | {s['p90_ms']:.1f} ms | {p['p90_ms']:.1f} ms | {o['p90_ratio']:.2f}x | |",
        f"| throughput, {thr['clients']} clients / batch {thr['in_process_batch']} | {thr['served_img_per_s']:.2f} "
        f"img/s | {thr['in_process_img_per_s']:.2f} img/s | {thr['ratio']:.2f}x | |",
        "",
        f"served vs in-process max abs diff: {lat['max_abs_diff_served_vs_in_process']:.2e}; requests per server "
        f"decode under load: {thr['requests_per_decode'] or 0:.2f}",
        "",
        f"| {res}² payload | request bytes | answer bytes | median per request |",
        "|---|---|---|---|",
    ]
    for mode in ("binary", "json"):
        m = pay[mode]
        lines.append(f"| {mode} | {m['request_bytes']:,} | {m['answer_bytes']:,} | {m['median_ms']:.1f} ms |")
    q = pay["json_over_binary"]
    lines.append(f"| json / binary | {q['request_bytes']:.2f}x | {q['answer_bytes']:.2f}x | {q['median_time']:.2f}x |")
    lines += [
        "",
        f"| {large}² decode on a fresh server | peak RSS | after load | growth | seconds |",
        "|---|---|---|---|---|",
    ]
    for mode in ("tiled", "whole"):
        m = mem[mode]
        fail = f" (failed: {m['failed'][:80]}; peak is a lower bound)" if "failed" in m else ""
        lines.append(
            f"| {mode} ({' '.join(m['server_options'])}){fail} | {_mib(m['peak_rss'])} | "
            f"{_mib(m['peak_rss_after_load'])} | {_mib(m['growth'])} | {m['seconds']:.1f} |"
        )
    if "whole_over_tiled_growth" in mem:
        random = " (random weights: shows that it tiled, says nothing of quality)" if "built" in r["model"] else ""
        lines.append(f"\nwhole / tiled growth: {mem['whole_over_tiled_growth']:.2f}x; tiled vs whole max abs diff: "
                     f"{mem['max_abs_diff_tiled_vs_whole']:.2e}{random}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, measure, write the JSON and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported diffusers folder (default: one built here)")
    parser.add_argument("--decoder", choices=["toy", *DECODERS], default="toy", help="the model built without --model")
    parser.add_argument("--tiny", action="store_true", help="smoke run: 64² and 128², few requests, no speed claim")
    parser.add_argument("--res", type=int, help="side of the latency, throughput and payload images (512; tiny 64)")
    parser.add_argument("--large", type=int, help="side of the image of the memory comparison (2048; tiny 128)")
    parser.add_argument("--requests", type=int, help="timed latency requests (10; tiny 2)")
    parser.add_argument("--warmup", type=int, help="untimed requests first (2; tiny 1)")
    parser.add_argument("--clients", type=int, help="concurrent clients (4; tiny 2)")
    parser.add_argument("--rounds", type=int, help="requests per client in the throughput test (2; tiny 1)")
    parser.add_argument("--payload-requests", type=int, help="timed requests per payload mode (3; tiny 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, here and in the server")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_throughput.json")
    args = parser.parse_args()
    tiny = args.tiny
    args.res = args.res or (64 if tiny else 512)
    args.large = args.large or (128 if tiny else 2048)
    args.requests = args.requests or (2 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    args.clients = args.clients or (2 if tiny else 4)
    args.rounds = args.rounds or (1 if tiny else 2)
    args.payload_requests = args.payload_requests or (1 if tiny else 3)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model is None:
            model = work / "model"
            report["model"] = build_model(args.decoder, model)
            what = f"{args.decoder} decoder built here, {report['model']['decoder_parameters'] / 1e6:.2f}M decoder"
            report["model"]["what"] = f"{what} parameters, random weights (time and memory do not depend on them)"
        else:
            model = args.model
            report["model"] = {"what": f"exported model {model}", "folder": str(model)}
        print(json.dumps(report), flush=True)
        local = InProcess(model)
        with served(model, list(TINY_TILE) if tiny else [], args.threads, work) as server:
            io = fetch_model_io(server.url, MODEL)
            report["latency"] = latency(server, io, local, args)
            print(json.dumps({"latency": report["latency"]}), flush=True)
            report["throughput"] = throughput(server, io, local, args)
            print(json.dumps({"throughput": report["throughput"]}), flush=True)
            report["payloads"] = payloads(server, io, args)
            print(json.dumps({"payloads": report["payloads"]}), flush=True)
        del local
        defaults = ServeConfig(str(model))
        tiling = TINY_TILE if tiny else ("--tile-above", defaults.tile_above, "--tile", defaults.tile,
                                         "--tile-overlap", defaults.tile_overlap)  # fmt: skip
        if args.large <= int(tiling[1]):
            raise SystemExit(f"--large {args.large}: give a side above the server's --tile-above {tiling[1]}")
        report["memory"] = {}
        outs = {}
        for mode, options in (("tiled", [str(o) for o in tiling]), ("whole", ["--tile-above", str(args.large)])):
            report["memory"][mode], outs[mode] = peak_memory(model, options, args, work)
            print(json.dumps({mode: report["memory"][mode]}), flush=True)
        if all(o is not None for o in outs.values()):
            mem = report["memory"]
            mem["whole_over_tiled_growth"] = mem["whole"]["growth"] / mem["tiled"]["growth"]
            mem["max_abs_diff_tiled_vs_whole"] = float(np.abs(outs["tiled"] - outs["whole"]).max())
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"done in {report['seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
