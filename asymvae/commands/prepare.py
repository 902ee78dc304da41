"""`asymvae prepare SOURCE --out URI`: validate, resize and split a source into tar shards plus a manifest."""

from __future__ import annotations

import argparse
import dataclasses

import yaml

from asymvae.config import ConfigError, from_dict


def prepare_config(overrides: list[str]):
    """A PrepareConfig with `prepare.field=value` overrides (values parsed as YAML)."""
    from asymvae.data.prepare import PrepareConfig

    data = dataclasses.asdict(PrepareConfig())
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or parts[0] != "prepare":
            raise ConfigError(f"--set {item!r}: expected prepare.FIELD=VALUE, e.g. --set prepare.max_side=512")
        node = data
        for depth, part in enumerate(parts[1:], 1):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else ""
                raise ConfigError(f"unknown config key {'.'.join(parts[: depth + 1])!r}. Known here: {known}")
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(text) if text.strip() else ""
            else:
                node = node[part]
    return from_dict(PrepareConfig, data, "prepare")


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
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. prepare.max_side=512"
    )
    p.set_defaults(func=run)
