"""`asymvae prepare`: validate, convert, resize and split a source into checksummed tar shards plus a manifest.

Layout of the output (a local folder or `s3://bucket/prefix`):

    manifest.json                      written last; lists every shard with samples, bytes and sha256
    shards-<fingerprint>/train-000000.tar, ...   WebDataset-style shards of the train split
    shards-<fingerprint>/val-000000.tar, ...     validation shards (each sample also has its fixed mask)
    shards-<fingerprint>/<shard>.json           receipt of each finished shard (what resume reuses)
    bad-images.tsv                     every unusable image with its reason (only when there are any)

`<fingerprint>` hashes the source's fingerprint and the config, so shards of different inputs never
mix and an older manifest stays valid (with its shards) until a new one replaces it; then the old
dataset's shard folder, the shard folders of interrupted runs of other inputs (in a local folder, held by
this run) and an old bad-image list go (`superseded`: only what asymvae wrote there). Shard contents are
a pure function of the inputs: images are processed in parallel but written in source order, so a
re-run reproduces the same bytes, and an interrupted run keeps every shard whose receipt is present and
whose object has the recorded size and sha256; a re-run checks every shard the same way and rebuilds a
missing or damaged one in its place. When more images are bad than `max_bad_share` allows, the run fails
listing all of them (`bad-images.tsv` beside the manifest); it is written whenever there are bad images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from PIL import Image

from asymvae.config import apply_overrides
from asymvae.data.config import PrepareConfig
from asymvae.data.identity import digest, run_fingerprint, sample_key, sample_names, source_fingerprint, split_of
from asymvae.data.images import as_bad_image, decode_image, shrunk_size
from asymvae.data.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ShardInfo,
    read_manifest,
    written_by_asymvae,
)
from asymvae.data.scan import BAD_LIST_NAME, bad_image_lines, bad_image_table, check_images
from asymvae.data.shard_sink import SPLITS, ShardSink, SplitState, verify_shards
from asymvae.data.shards import ShardWriter, encode_mask
from asymvae.data.sources import DataSourceError, ImageSource, open_source
from asymvae.data.superseded import remove_superseded
from asymvae.data.termination import default_sigterm, sigterm_stops
from asymvae.masks import make_mask
from asymvae.progress import Progress, phase
from asymvae.storage import Store, open_store
from asymvae.storage.local import LocalStore
from asymvae.storage.ownership import own_folder

log = logging.getLogger(__name__)


class PrepareError(DataSourceError):
    """The source cannot be prepared (too many bad images, nothing usable); the message lists them."""


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
    rebuilt_shards: int = 0
    """Missing or damaged shards of an earlier run that were rebuilt."""
    bad_list: str | None = None
    """Where every unusable image is listed (`bad-images.tsv`), when there are any."""


# ----------------------------------------------------------------------------------------------------------
# Per-image work (runs in worker processes)


def prepare_config(overrides: list[str]) -> PrepareConfig:
    """A PrepareConfig with `prepare.field=value` overrides (values parsed as YAML)."""
    return apply_overrides(PrepareConfig(), overrides, section="prepare")


def resize_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so that the longest side is at most `max_side` (never enlarges)."""
    size = shrunk_size(*image.size, max_side)
    if size == image.size:
        return image
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
    image = decode_image(source.load(i), cfg.min_side, cfg.max_side)
    return resize_max_side(image, cfg.max_side), image.size


def mask_index(name: str) -> int:
    """Index that seeds a sample's evaluation mask (a function of its name only)."""
    return int(digest(name)[:15], 16)


_WORKER: dict[str, Any] = {}


def _init_worker(source: ImageSource, cfg: PrepareConfig) -> None:
    default_sigterm()  # the pool ends its workers with SIGTERM: they stop at once, without a traceback
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
    pixels = hashlib.sha256(f"{image.mode} {image.size}\n".encode() + image.tobytes()).hexdigest()[:32]
    out: dict[str, Any] = {"ext": ext, "data": data, "size": image.size, "original": original, "pixels": pixels}
    if split == "val":
        w, h = image.size
        out["mask"] = encode_mask(make_mask(cfg.eval_masks, h, w, cfg.mask_seed, mask_index(name)))
    return i, out


# ----------------------------------------------------------------------------------------------------------
# The run


def _existing_manifest(store: Store, fingerprint: str) -> tuple[Manifest | None, Manifest | None, set[str]]:
    """The manifest already in `store` (None when there is none or it is damaged); the same if it has this
    fingerprint and every shard it lists is whole (size and sha256 as recorded), else None; and the names of
    the shards found whole (reused by a resume). A manifest.json asymvae did not write raises a
    ManifestError: it is never overwritten."""
    try:
        manifest = read_manifest(store)
    except ManifestError as e:  # ours but damaged: prepared anew; another tool's: never overwritten
        if not written_by_asymvae(store.get(MANIFEST_NAME).decode(errors="replace")):
            raise ManifestError(
                f"{store.url(MANIFEST_NAME)} exists and was not written by asymvae ({e.__cause__}), so prepare does "
                "not overwrite it. Fix: move it away, or prepare into another folder."
            ) from None
        return None, None, set()
    if manifest is None or manifest.fingerprint != fingerprint:
        return manifest, None, set()
    problems = verify_shards(store, [(s.name, s.sha256, s.bytes) for s in manifest.shards])
    whole = {s.name for s, why in zip(manifest.shards, problems, strict=True) if why is None}
    return manifest, (manifest if len(whole) == len(manifest.shards) else None), whole


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
    with sigterm_stops(), ctx.Pool(workers, initializer=_init_worker, initargs=(source, cfg)) as pool:
        yield from pool.imap(_process, tasks, chunksize=chunk)


def _sample_files(name: str, split: str, ordinal: int, result: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """A converted image's tar key and members: the image, its metadata and (val) its evaluation mask."""
    key = sample_key(name)
    (w, h), (ow, oh) = result["size"], result["original"]
    meta = {"key": key, "source": name, "split": split, "ordinal": ordinal}
    meta.update(width=w, height=h, original_width=ow, original_height=oh)
    files = {result["ext"]: result["data"], "json": json.dumps(meta).encode()}
    if "mask" in result:
        files["mask.png"] = result["mask"]
    return key, files


@dataclass
class _Work:
    """What a run converts: the source and config, each image's name and split, and the sink of its shards."""

    source: ImageSource
    cfg: PrepareConfig
    names: list[str]
    splits: list[str]
    sink: ShardSink

    @property
    def allowed_bad(self) -> int:
        """How many unusable images `max_bad_share` allows."""
        return int(self.cfg.max_bad_share * len(self.source))

    def pending(self) -> list[tuple[int, str, str]]:
        """(index, name, split) of each image not in a finished shard: train first, then val (each val image is
        checked against every train image, and a copy is kept out of val)."""
        return [
            (i, self.names[i], s)
            for s in SPLITS
            for i in range(len(self.names))
            if self.splits[i] == s and i >= self.sink.splits[s].done_end
        ]


@dataclass
class _Rebuild:
    """A damaged shard being rebuilt: its writer, the split ordinal of its first sample, images left."""

    writer: ShardWriter
    first: int
    left: int


def _rebuild_damaged(work: _Work) -> int:
    """Re-process the source images of each damaged shard of an earlier run and put the rebuilt shard in
    its place (the shard holds the same samples: shards are a pure function of the inputs)."""
    source, cfg, names, splits, sink = work.source, work.cfg, work.names, work.splits, work.sink
    owner: dict[int, tuple[SplitState, int]] = {}
    rebuilds: dict[tuple[str, int], _Rebuild] = {}
    for split, k, why in sink.damaged:
        log.warning("%s is damaged (%s): rebuilding it", sink.store.url(split.receipts[k]["name"]), why)
        start = split.receipts[k - 1]["end"] if k else 0
        indices = [i for i in range(start, split.receipts[k]["end"]) if splits[i] == split.name]
        owner.update((i, (split, k)) for i in indices)
        first = sum(r["samples"] for r in split.receipts[:k])
        rebuilds[split.name, k] = _Rebuild(ShardWriter(), first, len(indices))
    tasks = [(i, names[i], splits[i]) for i in sorted(owner)]
    for i, result in _results(source, cfg, tasks):
        split, k = owner[i]
        rebuild = rebuilds[split.name, k]
        skipped = {name for name, _, _ in split.receipts[k]["bad"]}  # bad images and duplicates, listed already
        if "bad" not in result and names[i] not in skipped:
            rebuild.writer.add(*_sample_files(names[i], split.name, rebuild.first + rebuild.writer.samples, result))
        rebuild.left -= 1
        if rebuild.left == 0:
            sink.replace(split, k, rebuild.writer)
    return len(rebuilds)


DUPLICATE = "duplicate"
"""The kind of a skipped image that is a val copy of a train image (not a fault: not counted as unusable)."""


def _unusable(bad: list[list[str]]) -> int:
    """How many of the skipped images `bad` ([name, reason, kind]) are unusable, i.e. not duplicates."""
    return sum(kind != DUPLICATE for _, _, kind in bad)


def _bad_report(bad: list[list[str]], total: int) -> dict[str, Any]:
    kinds = Counter(kind for _, _, kind in bad)
    return {
        "count": len(bad),
        "unusable": _unusable(bad),
        "total": total,
        "kinds": dict(sorted(kinds.items())),
        "files": [{"name": n, "reason": r} for n, r, _ in bad],
    }


def bad_summary(report: dict[str, Any], listed_in: str = "the manifest") -> str:
    """Readable bad-image report: counts by reason and up to 20 names with reasons."""
    lines = [f"{report['count']} of {report['total']} images skipped"]
    if report["kinds"]:
        lines[0] += " (" + ", ".join(f"{k} {n}" for k, n in report["kinds"].items()) + ")"
    listed = [(item["name"], item["reason"]) for item in report["files"]]
    return "\n".join(lines + bad_image_lines(listed, f" (all listed in {listed_in})"))


def _check_rest(
    source: ImageSource, cfg: PrepareConfig, tasks: list[tuple[int, str, str]], progress: bool
) -> list[list[str]]:
    """[name, reason, kind] of the bad images among `tasks`, found by checking them without converting."""
    log.info("too many unusable images: checking the other %d without converting them, to list them all", len(tasks))
    name_of = {i: name for i, name, _ in tasks}
    checked = check_images(source, list(name_of), cfg.min_side, progress, max_side=cfg.max_side)
    return [[name_of[i], error.reason, error.kind] for i, error in checked if error is not None]


def prepare(
    spec: str, out: str, cfg: PrepareConfig | None = None, progress: bool = True, create_bucket: bool = False
) -> PrepareResult:
    """Prepare source `spec` (as `data.source` accepts) into shards and a manifest at `out` (folder or s3://).

    Idempotent: with an identical source and config, and every shard whole (its sha256 checked), it returns
    at once (`up_to_date`); a missing or damaged shard is rebuilt, and after an interruption the finished
    shards are kept. Raises `PrepareError` when more than `max_bad_share` of the images are bad (all of them
    listed in `bad-images.tsv` beside the manifest), `DataSourceError` / `StorageError` when the source or
    the output cannot be used. A local output folder is held for the whole run (`storage.ownership`): a second
    prepare into it stops with one line naming this one.
    """
    cfg = cfg or PrepareConfig()
    store = open_store(out)
    store.check(create=create_bucket)
    with own_folder(store.root, f"asymvae prepare {spec}") if isinstance(store, LocalStore) else nullcontext():
        return _prepare(spec, store, cfg, progress)


def _prepare(spec: str, store: Store, cfg: PrepareConfig, progress: bool) -> PrepareResult:
    started = time.perf_counter()
    source, names, src_fp = _open(spec, cfg)
    fingerprint = run_fingerprint(src_fp, cfg.output_settings())
    manifest_uri = store.url(MANIFEST_NAME)
    previous, existing, whole = _existing_manifest(store, fingerprint)
    if existing is not None:
        log.info("%s is up to date (fingerprint %s, %d shards verified)", manifest_uri, fingerprint[:16], len(whole))
        listed = store.url(BAD_LIST_NAME) if existing.bad.get("count") else None
        return PrepareResult(
            manifest_uri, existing, up_to_date=True, seconds=time.perf_counter() - started, bad_list=listed
        )

    sink = ShardSink(store, f"shards-{fingerprint[:16]}", cfg.shard_max_bytes)
    reused = sink.resume(whole)
    work = _Work(source, cfg, names, [split_of(n, cfg.val_fraction) for n in names], sink)
    tasks = work.pending()
    if reused or sink.damaged:
        log.info("resuming: %d finished shards kept, %d of %d images left", reused, len(tasks), len(source))
    try:
        rebuilt = _rebuild_damaged(work) if sink.damaged else 0
        unchecked = _convert_all(work, tasks, progress)
    finally:
        sink.shutdown()  # every shard and receipt is stored before anything below (the manifest) is written
    bad = sink.bad_images() + unchecked
    manifest = _write_manifest(spec, work, (src_fp, fingerprint), bad, previous)
    return PrepareResult(
        manifest_uri,
        manifest,
        processed=len(tasks),
        reused_shards=reused,
        seconds=time.perf_counter() - started,
        rebuilt_shards=rebuilt,
        bad_list=store.url(BAD_LIST_NAME) if bad else None,
    )


def _open(spec: str, cfg: PrepareConfig) -> tuple[ImageSource, list[str], str]:
    """The source of `spec`, its images' names (`sample_names`) and its fingerprint; an empty one raises."""
    with phase(f"opening {spec} and listing its images", log):
        source = open_source(spec, split=cfg.split, image_column=cfg.image_column, max_samples=cfg.max_samples)
        if len(source) == 0:
            raise PrepareError(f"{source.description} has no images. Fix: check the source and prepare.split.")
        names = sample_names(source)
        return source, names, source_fingerprint(source, spec, names)


def _convert_all(work: _Work, tasks: list[tuple[int, str, str]], progress: bool) -> list[list[str]]:
    """Convert `tasks` into the sink's shards, then close the last shard of each split; returns []. When more
    images are unusable than `max_bad_share` allows, converting stops and the rest are only checked: returns
    [name, reason, kind] of the bad images among them, so that the failure lists every one."""
    log.info("preparing %d images of %s into %s", len(tasks), work.source.description, work.sink.store.uri)
    stopped_at = _convert(work, tasks, progress)
    if stopped_at is not None:
        return _check_rest(work.source, work.cfg, tasks[stopped_at:], progress)
    for split in work.sink.splits.values():
        work.sink.close(split, end=len(work.source))
    return []


def _convert(work: _Work, tasks: list[tuple[int, str, str]], progress: bool) -> int | None:
    """Convert `tasks` in source order into the sink; None when all are done, else how many were done when
    one unusable image too many stopped it."""
    n_bad = _unusable(work.sink.bad_images())
    train_pixels = work.sink.splits["train"].names_by_digest()
    results = _results(work.source, work.cfg, tasks)
    with Progress("preparing", len(tasks), "img", logger=log, bar=progress) as shown:
        for done, (i, result) in enumerate(results, 1):
            split = work.sink.splits[work.splits[i]]
            if "bad" in result:
                split.bad.append([work.names[i], result["bad"], result["kind"]])
                n_bad += 1
                if n_bad > work.allowed_bad:  # this run fails: converting nothing more
                    results.close()
                    return done
            else:
                _keep(work.sink, split, i, work.names[i], result, train_pixels)
            shown.update()
    return None


def _keep(
    sink: ShardSink, split: SplitState, i: int, name: str, result: dict[str, Any], train_pixels: dict[str, str]
) -> None:
    """Add converted image `i` to its split's shard, unless it is a val image with the pixels of a train image
    (`train_pixels`: digest -> name): that one is listed as a duplicate and kept out of val."""
    if split.name == "val" and result["pixels"] in train_pixels:
        twin = train_pixels[result["pixels"]]
        split.bad.append([name, f"same pixels as train image {twin}: kept out of val", DUPLICATE])
        return
    sink.add(split, i, *_sample_files(name, split.name, split.ordinal, result), digest=(result["pixels"], name))
    if split.name == "train":
        train_pixels[result["pixels"]] = name


def _write_manifest(
    spec: str, work: _Work, fingerprints: tuple[str, str], bad: list[list[str]], previous: Manifest | None
) -> Manifest:
    """List the `bad` images in bad-images.tsv (when any), fail when too many are unusable, else write the
    manifest (last: only now is the dataset visible) and remove what it supersedes."""
    store, total = work.sink.store, len(work.source)
    report = _bad_report(bad, total)
    listed_in = "the manifest"
    if bad:
        store.put(BAD_LIST_NAME, bad_image_table(bad))
        listed_in = store.url(BAD_LIST_NAME)
        log.warning("%s", bad_summary(report, listed_in))
    if report["unusable"] > work.allowed_bad:
        _fail_bad(report, work.cfg, listed_in)
    manifest = _manifest(spec, work.source, fingerprints, work.cfg, work.sink, report)
    if manifest.samples("train") == 0:
        raise PrepareError(f"no usable training image in {work.source.description}.\n{bad_summary(report, listed_in)}")
    store.put(MANIFEST_NAME, manifest.to_json().encode())
    remove_superseded(store, work.sink.folder, previous, abandoned=isinstance(store, LocalStore), bad_list=bool(bad))
    log.info(
        "wrote %s: %d train / %d val samples in %d shards",
        store.url(MANIFEST_NAME),
        manifest.samples("train"),
        manifest.samples("val"),
        len(manifest.shards),
    )
    return manifest


def _fail_bad(report: dict[str, Any], cfg: PrepareConfig, listed_in: str) -> None:
    raise PrepareError(
        f"too many unusable images: {report['unusable']} of {report['total']} > prepare.max_bad_share="
        f"{cfg.max_bad_share} (no manifest written).\n{bad_summary(report, listed_in)}\nFix: repair or remove "
        f"these files, or accept them with --prepare.max-bad-share <share>; keep small images with "
        f"--prepare.min-side <px> (now {cfg.min_side})."
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
