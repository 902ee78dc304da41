"""Throughput of `asymvae prepare` and of the streaming reader, each against the rate it should reach.

Run in one process, side by side, on the same images and the same number of cores:

1. prepare's images/s (into a local SeaweedFS S3 server and into a local folder) against the bare rate of
   decode + validate + resize + encode of the same files by a process pool of the same size (no tar, no
   checksums, no metadata, masks or upload);
2. the streaming reader's images/s from that S3 server (DataLoader, crops + masks included) against what a
   training step consumes: measured with a small asymmetric model training from those shards on the
   machine running this, and given with --step-images-per-s (default: 53.7 img/s, the best H200 figure of
   the anchor measurement in benchmarks/RESULTS.md for the x1.5 decoder at 256², batch 16).

    python benchmarks/prepare_throughput.py [--images 400] [--size 512] [--max-side 256]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_source(folder: Path, count: int, size: int) -> None:
    """`count` JPEG photos (crops of scikit-image's) of `size`² into `folder` (setup, not timed)."""
    from asymvae.data.demo_images import demo_image

    folder.mkdir(parents=True)
    for i in range(count):
        image, _ = demo_image(i, size, seed=1)
        image.save(folder / f"img{i:05d}.jpg", quality=92)


_BARE: dict = {}


def _bare_init(source, cfg) -> None:
    _BARE.update(source=source, cfg=cfg)


def _bare_one(i: int) -> int:
    from asymvae.data.prepare import convert, encode_image

    image, _ = convert(_BARE["source"], i, _BARE["cfg"])
    return len(encode_image(image, _BARE["cfg"])[1])


def bare_rate(folder: Path, cfg, workers: int) -> float:
    """Images/s of decode + validate + resize + encode alone, on a pool of `workers` processes."""
    from asymvae.data.sources import open_source

    source = open_source(str(folder))
    ctx = multiprocessing.get_context("fork")
    start = time.perf_counter()
    with ctx.Pool(workers, initializer=_bare_init, initargs=(source, cfg)) as pool:
        n = sum(1 for _ in pool.imap(_bare_one, range(len(source)), chunksize=max(1, len(source) // (workers * 8))))
    return n / (time.perf_counter() - start)


def prepare_rate(folder: Path, out: str, cfg) -> tuple[float, object]:
    """Images/s of a full prepare run (fresh output)."""
    from asymvae.data.prepare import prepare

    start = time.perf_counter()
    result = prepare(str(folder), out, cfg, progress=False)
    return result.processed / (time.perf_counter() - start), result


def reader_rate(uri: str, resolution: int, batch: int, workers: int, epochs: float) -> float:
    """Images/s the streaming reader delivers through a DataLoader (shards from S3, crops, masks)."""
    from torch.utils.data import DataLoader

    from asymvae.data.config import DataConfig
    from asymvae.data.streaming import ShardStream
    from asymvae.masks import MaskConfig

    data = DataConfig(resolution=resolution, num_workers=workers)
    stream = ShardStream.open(uri, data, MaskConfig(), seed=0, rank=0, world=1)
    n_batches = max(4, int(stream.size * epochs) // batch)
    loader = iter(DataLoader(stream, batch_size=batch, num_workers=workers))
    next(loader)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(n_batches):
        next(loader)
    return n_batches * batch / (time.perf_counter() - start)


def training_rate(uri: str, work: Path, resolution: int, batch: int, steps: int) -> dict:
    """img/s and data wait of a small asymmetric decoder (SD layout, narrow) training from the shards on the CPU."""
    from asymvae.data.config import DataConfig
    from asymvae.losses.config import LossConfig, LPIPSConfig
    from asymvae.model.build import scratch_autoencoderkl
    from asymvae.model.config import ModelConfig
    from asymvae.training.config import OptimConfig, TrainConfig
    from asymvae.training.experiment import ExperimentConfig
    from asymvae.training.presets import get_preset
    from asymvae.training.trainer import Trainer

    torch.manual_seed(0)
    # The demo's base architecture (SD's four levels, narrow), untrained: only speed is measured.
    scratch_autoencoderkl(get_preset("demo_base").model).save_pretrained(work / "base" / "vae")
    cfg = ExperimentConfig(
        name="bench",
        model=ModelConfig(kind="asymmetric", pretrained=str(work / "base"), decoder="base"),
        data=DataConfig(shards=uri, resolution=resolution, num_workers=2),
        loss=LossConfig(pixel="l1", lpips=LPIPSConfig(weight=0.0)),
        optim=OptimConfig(lr=1e-4, warmup_steps=1),
        train=TrainConfig(
            max_steps=steps,
            batch_size=batch,
            mixed_precision="no",
            checkpoint_every=10**6,
            log_every=steps - 2,
            output_dir=str(work / "run"),
            progress=False,
        ),
    )
    Trainer(cfg, pretrained=str(work / "base")).fit()
    rows = [json.loads(x) for x in (work / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]  # the window after the first log: warm-up excluded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--size", type=int, default=512, help="side of the source JPEGs")
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--shard-mb", type=float, default=128, help="prepare.shard_max_bytes in MiB")
    p.add_argument("--resolution", type=int, default=64, help="training crop for the reader and the step")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--step-images-per-s", type=float, default=53.7)
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--repeat", type=int, default=3, help="rounds of bare / prepare runs")
    args = p.parse_args()

    from asymvae.data.prepare import PrepareConfig
    from asymvae.storage.local_s3 import LocalS3Server

    cores = os.cpu_count() or 1
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
        f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "src"
        write_source(folder, args.images, args.size)
        cfg = PrepareConfig(
            max_side=args.max_side, min_side=16, workers=cores, shard_max_bytes=int(args.shard_mb * 2**20)
        )
        print(
            f"source: {args.images} JPEGs of {args.size}², prepared to max side {args.max_side}, "
            f"{cores} processes, shards <= {args.shard_mb} MiB"
        )
        with LocalS3Server(work / "s3") as server:
            server.make_bucket("bench")
            os.environ.update(server.env())
            # The machine may be shared: interleave the runs and take medians of per-round ratios.
            rounds = []
            for r in range(args.repeat):
                bare = bare_rate(folder, cfg, cores)
                to_s3, result = prepare_rate(folder, f"s3://bench/round{r}", cfg)
                local, _ = prepare_rate(folder, str(work / f"out{r}"), cfg)
                rounds.append((bare, to_s3, local))
                print(
                    f"round {r}: bare {bare:6.1f} img/s, prepare->S3 {to_s3:6.1f} ({to_s3 / bare:.2f}x), "
                    f"prepare->local {local:6.1f} ({local / bare:.2f}x)"
                )
            m = result.manifest
            print(
                f"shards: {len(m.shards)} ({m.samples('train')} train / {m.samples('val')} val), "
                f"{sum(s.bytes for s in m.shards) / 2**20:.1f} MiB"
            )
            med = statistics.median
            print(f"bare decode+resize+encode: {med(b for b, _, _ in rounds):7.1f} img/s (median)")
            print(
                f"prepare -> S3 (SeaweedFS): {med(x for _, x, _ in rounds):7.1f} img/s, "
                f"median ratio {med(x / b for b, x, _ in rounds):.2f}x bare"
            )
            print(
                f"prepare -> local folder:   {med(x for _, _, x in rounds):7.1f} img/s, "
                f"median ratio {med(x / b for b, _, x in rounds):.2f}x bare"
            )
            uri = result.manifest_uri
            read = reader_rate(uri, args.resolution, args.batch, 2, epochs=2.0)
            step = training_rate(uri, work / "train", args.resolution, args.batch, args.train_steps)
            print(f"streaming reader from S3 (2 workers, {args.resolution}² crops + masks): {read:7.1f} img/s")
            print(
                f"training from S3 on this machine (small asymmetric model, {args.resolution}², batch {args.batch}): "
                f"{step['perf/img_per_s']:.1f} img/s, data wait {step['perf/data_wait_pct']:.1f}% -> reader/step = "
                f"{read / step['perf/img_per_s']:.1f}x"
            )
            read256 = reader_rate(uri, 256, 16, 2, epochs=1.0)
            print(
                f"streaming reader from S3 (2 workers, 256² crops + masks, batch 16): {read256:7.1f} img/s -> "
                f"vs --step-images-per-s {args.step_images_per_s}: {read256 / args.step_images_per_s:.2f}x"
            )


if __name__ == "__main__":
    main()
