"""`asymvae prepare SOURCE --out URI`: validate, resize and split a source into tar shards plus a manifest."""

from __future__ import annotations

import argparse

from asymvae.commands.common import add_set_option
from asymvae.config import apply_overrides


def prepare_config(overrides: list[str]):
    """A PrepareConfig with `prepare.field=value` overrides (values parsed as YAML)."""
    from asymvae.data.prepare import PrepareConfig

    return apply_overrides(PrepareConfig(), overrides, section="prepare", example="prepare.max_side=512")


def run(args: argparse.Namespace) -> int:
    """Prepare, then print where the manifest is and how to train from it."""
    from asymvae.data.prepare import bad_summary, prepare

    cfg = prepare_config(args.set)
    result = prepare(args.source, args.out, cfg, progress=True, create_bucket=args.create_bucket)
    m = result.manifest
    if result.up_to_date:
        print(f"Up to date: {result.manifest_uri} (same source and settings; nothing done).")
    else:
        rate = result.processed / max(result.seconds, 1e-9)
        kept = f", {result.reused_shards} shards kept from an interrupted run" if result.reused_shards else ""
        print(
            f"Prepared {result.processed} images in {result.seconds:.1f} s ({rate:.0f} img/s{kept}): "
            f"{m.samples('train')} train / {m.samples('val')} val samples in {len(m.shards)} shards."
        )
        if m.bad.get("count"):
            print(bad_summary(m.bad))
    print(f"Manifest: {result.manifest_uri}")
    print(f"Train from it with:\n  asymvae train CONFIG --set data.shards={result.manifest_uri}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `prepare` to the command line."""
    p = sub.add_parser(
        "prepare",
        help="turn images into checksummed tar shards + manifest (local folder or s3://bucket/prefix)",
        description=__doc__,
    )
    p.add_argument("source", help="hub dataset id, dataset/image folder, parquet file, or builtin:demo")
    p.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    p.add_argument("--create-bucket", action="store_true", help="create the S3 bucket if it does not exist")
    add_set_option(p, example="prepare.max_side=512")
    p.set_defaults(func=run)
