"""`asymvae prepare SOURCE --out URI [--prepare.field VALUE ...]`: validate, resize and split a source into tar
shards plus a manifest."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from asymvae.commands.options import add_command, from_args
from asymvae.data.config import PrepareConfig


@dataclass
class PrepareOptions:
    """`asymvae prepare`."""

    source: str
    """What to prepare: a hub dataset id, a dataset or image folder, a parquet file, or `builtin:demo`."""
    out: str
    """Output folder or `s3://bucket/prefix`."""
    create_bucket: bool = False
    """Create the S3 bucket if it does not exist."""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """How images become shards: `--prepare.max-side 512`, `--prepare.eval-masks.full-mask-prob 0`, ..."""


def run(args: argparse.Namespace) -> int:
    """Prepare, then print where the manifest is and how to train from it."""
    from asymvae.data.prepare import bad_summary, prepare

    opts = from_args(PrepareOptions, args)
    result = prepare(opts.source, opts.out, opts.prepare, progress=True, create_bucket=opts.create_bucket)
    m = result.manifest
    if result.up_to_date:
        print(
            f"Up to date: {result.manifest_uri} (same source and settings, all {len(m.shards)} shards checked "
            "against their sha256; nothing done)."
        )
    else:
        rate = result.processed / max(result.seconds, 1e-9)
        kept = f", {result.reused_shards} shards kept from an earlier run" if result.reused_shards else ""
        rebuilt = f", {result.rebuilt_shards} missing or damaged shards rebuilt" if result.rebuilt_shards else ""
        print(
            f"Prepared {result.processed} images in {result.seconds:.1f} s ({rate:.0f} img/s{kept}{rebuilt}): "
            f"{m.samples('train')} train / {m.samples('val')} val samples in {len(m.shards)} shards."
        )
        if m.bad.get("count"):
            print(bad_summary(m.bad, result.bad_list or "the manifest"))
    print(f"Manifest: {result.manifest_uri}")
    print(f"Train from it with:\n  asymvae train CONFIG --data.shards {result.manifest_uri}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `prepare` to the command line."""
    add_command(
        sub, "prepare", PrepareOptions, run, description=__doc__,
        help="turn images into checksummed tar shards + manifest (local folder or s3://bucket/prefix)",
        positional=("source",),
    )  # fmt: skip
