"""`asymvae prepare`: validate, convert, resize and split a source into checksummed tar shards plus a manifest.

Layout of the output (a local folder or `s3://bucket/prefix`):

    manifest.json                      written last; lists every shard with samples, bytes and sha256
    shards-<fingerprint>/train-000000.tar, ...   WebDataset-style shards of the train split
    shards-<fingerprint>/val-000000.tar, ...     validation shards (each sample also has its fixed mask)
    shards-<fingerprint>/<shard>.json           receipt of each finished shard (what resume reuses)

`<fingerprint>` hashes the source's fingerprint and the config, so shards of different inputs never
mix and an older manifest stays valid (with its shards) until a new one replaces it. Shard contents are
a pure function of the inputs: images are processed in parallel but written in source order, so a
re-run reproduces the same bytes, and an interrupted run keeps every shard whose receipt is present and
whose object has the recorded size.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from PIL import Image

from asymvae.config import apply_overrides
from asymvae.data.identity import digest, run_fingerprint, sample_key, sample_names, source_fingerprint, split_of
from asymvae.data.images import as_bad_image, decode_image
from asymvae.data.manifest import MANIFEST_NAME, Manifest, ManifestError, ShardInfo, read_manifest
from asymvae.data.shard_sink import SPLITS, ShardSink
from asymvae.data.shards import encode_mask
from asymvae.data.sources import DataSourceError, ImageSource, bad_image_lines, open_source
from asymvae.masks import MaskConfig, eval_mask_config, make_mask
from asymvae.storage import Store, open_store

log = logging.getLogger(__name__)


class PrepareError(DataSourceError):
    """The source cannot be prepared (too many bad images, nothing usable); the message lists them."""


@dataclass
class PrepareConfig:
    """How `asymvae prepare` turns a source into shards (`--set prepare.<field>=value`)."""

    split: str = "train"
    """Split of the source to read (of a Hugging Face dataset, or split subfolder of an image folder)."""
    image_column: str | None = None
    """Image column of a dataset source (found automatically when unset)."""
    max_samples: int | None = None
    """Use only the first N images of the source."""
    max_side: int = 1024
    """Longest side after resizing (images are only ever shrunk, keeping their aspect ratio)."""
    min_side: int = 64
    """Images whose short side is below this are skipped as too small."""
    val_fraction: float = 0.05
    """Share of images put in the validation split, chosen by a hash of each image's name (stable when the
    source grows)."""
    image_format: str = "jpeg"
    """`jpeg` (4:4:4 chroma, `jpeg_quality`) or `png` (lossless)."""
    jpeg_quality: int = 95
    """JPEG quality, 1-100."""
    shard_max_bytes: int = 128 << 20
    """Largest shard size in bytes (a single sample larger than this gets a shard of its own)."""
    max_bad_share: float = 0.05
    """Fail, writing no manifest, when more than this share of the images is unusable."""
    workers: int = 0
    """Processes that decode and encode images (0 = one per CPU core). Does not change the output."""
    mask_seed: int = 0
    """Seed of the fixed evaluation masks stored with validation samples."""
    eval_masks: MaskConfig = field(default_factory=eval_mask_config)
    """Mix and geometry of the evaluation masks (1 = hole)."""

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise ValueError(f"prepare.max_side must be >= 8, got {self.max_side}")
        if self.min_side < 1 or self.min_side > self.max_side:
            raise ValueError(f"prepare.min_side must be in [1, max_side], got {self.min_side}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"prepare.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"prepare.image_format must be jpeg or png, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"prepare.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.shard_max_bytes < 64 << 10:
            raise ValueError(f"prepare.shard_max_bytes must be at least 65536, got {self.shard_max_bytes}")
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ValueError(f"prepare.max_bad_share must be in [0, 1], got {self.max_bad_share}")
        if self.workers < 0:
            raise ValueError(f"prepare.workers must be >= 0, got {self.workers}")

    def output_settings(self) -> dict[str, Any]:
        """The fields that determine the output (all but `workers`)."""
        settings = asdict(self)
        settings.pop("workers")
        return settings


@dataclass
class PrepareResult:
    """What a prepare run did."""

    manifest_uri: str
    manifest: Manifest
    up_to_date: bool = False
    """True when an identical dataset was already there and nothing was done."""
    processed: int = 0
    """Images decoded and encoded by this run."""
    reused_shards: int = 0
    """Shards of an interrupted earlier run that were kept."""
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------------------
# Per-image work (runs in worker processes)


def prepare_config(overrides: list[str]) -> PrepareConfig:
    """A PrepareConfig with `prepare.field=value` overrides (values parsed as YAML)."""
    return apply_overrides(PrepareConfig(), overrides, section="prepare", example="prepare.max_side=512")


def resize_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so that the longest side is at most `max_side` (never enlarges)."""
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def encode_image(image: Image.Image, cfg: PrepareConfig) -> tuple[str, bytes]:
    """(extension, bytes) of an RGB image in the configured format."""
    buf = io.BytesIO()
    if cfg.image_format == "png":
        image.save(buf, format="PNG")
        return "png", buf.getvalue()
    image.save(buf, format="JPEG", quality=cfg.jpeg_quality, subsampling=0)
    return "jpg", buf.getvalue()


def convert(source: ImageSource, i: int, cfg: PrepareConfig) -> tuple[Image.Image, tuple[int, int]]:
    """Decode and validate image `i`, convert to RGB and resize; returns it and its original size."""
    image = decode_image(source.load(i), cfg.min_side)
    return resize_max_side(image, cfg.max_side), image.size


def mask_index(name: str) -> int:
    """Index that seeds a sample's evaluation mask (a function of its name only)."""
    return int(digest(name)[:15], 16)


_WORKER: dict[str, Any] = {}


def _init_worker(source: ImageSource, cfg: PrepareConfig) -> None:
    _WORKER.update(source=source, cfg=cfg)


def _process(task: tuple[int, str, str]) -> tuple[int, dict[str, Any]]:
    i, name, split = task
    source: ImageSource = _WORKER["source"]
    cfg: PrepareConfig = _WORKER["cfg"]
    try:
        image, original = convert(source, i, cfg)
    except Exception as e:
        bad = as_bad_image(e)
        return i, {"bad": bad.reason, "kind": bad.kind}
    ext, data = encode_image(image, cfg)
    out: dict[str, Any] = {"ext": ext, "data": data, "size": image.size, "original": original}
    if split == "val":
        w, h = image.size
        out["mask"] = encode_mask(make_mask(cfg.eval_masks, h, w, cfg.mask_seed, mask_index(name)))
    return i, out


# ----------------------------------------------------------------------------------------------------------
# The run


def _existing_manifest(store: Store, fingerprint: str) -> Manifest | None:
    """The manifest already in `store` if it has this fingerprint and all its shards are present and whole."""
    try:
        manifest = read_manifest(store)
    except ManifestError:  # not ours or damaged: prepare anew (store errors still propagate)
        return None
    if manifest is None or manifest.fingerprint != fingerprint:
        return None
    sizes = {o.key: o.size for o in store.list(f"shards-{fingerprint[:16]}/")}
    return manifest if all(sizes.get(s.name) == s.bytes for s in manifest.shards) else None


def _results(
    source: ImageSource, cfg: PrepareConfig, tasks: list[tuple[int, str, str]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    workers = cfg.workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) < 2:
        _init_worker(source, cfg)
        yield from map(_process, tasks)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(source, cfg)) as pool:
        yield from pool.imap(_process, tasks, chunksize=chunk)


def _bad_report(bad: list[list[str]], total: int) -> dict[str, Any]:
    kinds = Counter(kind for _, _, kind in bad)
    return {
        "count": len(bad),
        "total": total,
        "kinds": dict(sorted(kinds.items())),
        "files": [{"name": n, "reason": r} for n, r, _ in bad],
    }


def bad_summary(report: dict[str, Any]) -> str:
    """Readable bad-image report: counts by reason and up to 20 names with reasons."""
    lines = [f"{report['count']} of {report['total']} images unusable"]
    if report["kinds"]:
        lines[0] += " (" + ", ".join(f"{k} {n}" for k, n in report["kinds"].items()) + ")"
    listed = [(item["name"], item["reason"]) for item in report["files"]]
    return "\n".join(lines + bad_image_lines(listed, " (all listed in the manifest)"))


def prepare(
    spec: str, out: str, cfg: PrepareConfig | None = None, progress: bool = True, create_bucket: bool = False
) -> PrepareResult:
    """Prepare source `spec` (as `data.source` accepts) into shards and a manifest at `out` (folder or s3://).

    Idempotent: with an identical source and config it returns at once (`up_to_date`); after an interruption
    it keeps the finished shards. Raises `PrepareError` when more than `max_bad_share` of the images are bad,
    `DataSourceError` / `StorageError` when the source or the output cannot be used.
    """
    cfg = cfg or PrepareConfig()
    started = time.perf_counter()
    store = open_store(out)
    store.check(create=create_bucket)
    source = open_source(spec, split=cfg.split, image_column=cfg.image_column, max_samples=cfg.max_samples)
    total = len(source)
    if total == 0:
        raise PrepareError(f"{source.description} has no images. Fix: check the source and prepare.split.")
    names = sample_names(source)
    src_fp = source_fingerprint(source, spec, names)
    fingerprint = run_fingerprint(src_fp, cfg.output_settings())
    manifest_uri = store.url(MANIFEST_NAME)
    existing = _existing_manifest(store, fingerprint)
    if existing is not None:
        log.info("%s is up to date (fingerprint %s): nothing to do", manifest_uri, fingerprint[:16])
        return PrepareResult(manifest_uri, existing, up_to_date=True, seconds=time.perf_counter() - started)

    sink = ShardSink(store, f"shards-{fingerprint[:16]}", cfg.shard_max_bytes)
    reused = sink.resume()
    splits = [split_of(n, cfg.val_fraction) for n in names]
    tasks = [(i, names[i], s) for i, s in enumerate(splits) if i >= sink.splits[s].done_end]
    if reused:
        log.info("resuming: %d finished shards kept, %d of %d images left", reused, len(tasks), total)
    log.info("preparing %d images of %s into %s", len(tasks), source.description, store.uri)
    allowed_bad = int(cfg.max_bad_share * total)
    bar = _Progress(len(tasks), progress)
    n_bad = len(sink.bad_images())
    try:
        for done, (i, result) in enumerate(_results(source, cfg, tasks), 1):
            split = sink.splits[splits[i]]
            if "bad" in result:
                split.bad.append([names[i], result["bad"], result["kind"]])
                n_bad += 1
                if n_bad > allowed_bad:
                    _fail_bad(sink.bad_images(), total, cfg, partial=True)
            else:
                key = sample_key(names[i])
                w, h = result["size"]
                meta = {"key": key, "source": names[i], "split": split.name, "ordinal": split.ordinal}
                meta.update(width=w, height=h, original_width=result["original"][0])
                meta.update(original_height=result["original"][1])
                files = {result["ext"]: result["data"], "json": json.dumps(meta).encode()}
                if "mask" in result:
                    files["mask.png"] = result["mask"]
                sink.add(split, i, key, files)
            bar.update(done)
        for split in sink.splits.values():
            sink.close(split, end=total)
    finally:
        bar.close()
        sink.shutdown()  # every shard and receipt is stored before anything below (the manifest) is written
    bad = sink.bad_images()
    report = _bad_report(bad, total)
    if report["count"]:
        log.warning("%s", bad_summary(report))
    if report["count"] > allowed_bad:
        _fail_bad(bad, total, cfg)
    manifest = _manifest(spec, source, (src_fp, fingerprint), cfg, sink, report)
    if manifest.samples("train") == 0:
        raise PrepareError(f"no usable training image in {source.description}.\n{bad_summary(report)}")
    store.put(MANIFEST_NAME, manifest.to_json().encode())  # last: only now is the dataset visible
    log.info(
        "wrote %s: %d train / %d val samples in %d shards",
        manifest_uri,
        manifest.samples("train"),
        manifest.samples("val"),
        len(manifest.shards),
    )
    return PrepareResult(manifest_uri, manifest, False, len(tasks), reused, time.perf_counter() - started)


def _fail_bad(bad: list[list[str]], total: int, cfg: PrepareConfig, partial: bool = False) -> None:
    report = _bad_report(bad, total)
    seen = "at least " if partial else ""
    raise PrepareError(
        f"too many unusable images: {seen}{report['count']} of {total} > prepare.max_bad_share={cfg.max_bad_share} "
        f"(no manifest written).\n{bad_summary(report)}\nFix: repair or remove these files, or accept them with "
        f"--set prepare.max_bad_share=<share>; keep small images with --set prepare.min_side=<px> "
        f"(now {cfg.min_side})."
    )


def _manifest(
    spec: str,
    source: ImageSource,
    fingerprints: tuple[str, str],
    cfg: PrepareConfig,
    sink: ShardSink,
    report: dict[str, Any],
) -> Manifest:
    src_fp, fingerprint = fingerprints
    shards = [
        ShardInfo(r["name"], r["split"], r["samples"], r["bytes"], r["sha256"])
        for split in sink.splits.values()
        for r in split.receipts
        if r["name"] is not None
    ]
    splits = {
        s: {"samples": sum(x.samples for x in shards if x.split == s), "shards": sum(x.split == s for x in shards)}
        for s in SPLITS
    }
    return Manifest(
        fingerprint=fingerprint,
        source={"spec": spec, "description": source.description, "images": len(source), "fingerprint": src_fp},
        config=json.loads(json.dumps(asdict(cfg), default=list)),
        shards=shards,
        splits=splits,
        bad=report,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


class _Progress:
    """tqdm on a terminal, else a log line every 10%."""

    def __init__(self, total: int, show: bool) -> None:
        self.total = total
        self.bar = None
        self.next_log = 0.1
        if show and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="Preparing", unit="img", file=sys.stderr)
        self.started = time.perf_counter()
        self.done = 0

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.done)
        elif self.total and done / self.total >= self.next_log:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            log.info("prepared %d/%d images (%.0f img/s)", done, self.total, rate)
            self.next_log += 0.1
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
