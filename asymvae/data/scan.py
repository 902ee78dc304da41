"""Checking every image of a source up front, and reporting the bad ones: all of them, by name.

`check_images` decodes images on threads and says which are bad and why; `scan_source` runs it over a
whole source for training and enforces the bad-share limit. A summary lists the first 20 bad images; the
complete list goes to a tab-separated file (`bad_image_table`), so a user fixing them learns of all of
them at once, not 20 per run.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from asymvae.data.image_source import DataSourceError, ImageSource
from asymvae.data.images import BadImageError, as_bad_image, check_image
from asymvae.progress import Progress
from asymvae.storage.local import write_atomic

log = logging.getLogger(__name__)

__all__ = ["BAD_LIST_NAME", "ScanReport", "bad_image_lines", "bad_image_table", "check_images", "scan_source"]

BAD_LIST_NAME = "bad-images.tsv"
"""File name of the complete list of bad images (`bad_image_table`)."""
_MAX_LISTED_BAD = 20

BadImage = Sequence[str]
"""(name, reason, kind) of one bad image."""


def bad_image_lines(bad: Sequence[BadImage], more: str = "") -> list[str]:
    """`name: reason` lines of the first 20 bad images, then how many more there are (followed by `more`)."""
    lines = [f"  {b[0]}: {b[1]}" for b in bad[:_MAX_LISTED_BAD]]
    if len(bad) > _MAX_LISTED_BAD:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED_BAD} more{more}")
    return lines


def bad_image_table(bad: Sequence[BadImage]) -> bytes:
    """Every bad image as a line `name<TAB>kind<TAB>reason` under a header (`cut -f1` gives the names)."""
    clean = [[" ".join(str(v).split()) for v in (name, kind, reason)] for name, reason, kind in bad]
    return "".join("\t".join(row) + "\n" for row in [["name", "kind", "reason"], *clean]).encode()


def _check_one(source: ImageSource, i: int, min_side: int, max_side: int | None) -> tuple[int, BadImageError | None]:
    try:
        check_image(source.load(i), min_side, max_side)
    except Exception as e:
        return i, as_bad_image(e)
    return i, None


def check_images(
    source: ImageSource,
    indices: Sequence[int],
    min_side: int,
    progress: bool = False,
    num_threads: int | None = None,
    max_side: int | None = None,
) -> Iterator[tuple[int, BadImageError | None]]:
    """(i, None) for each usable image of `indices`, (i, why) for each bad one, in order (`check_image`'s
    rules: `max_side` is the long side images will be shrunk to, when they will be).

    Decoding runs on `num_threads` threads (default: up to 8); Pillow releases the GIL while decoding, so
    this scales on large sources. Progress is logged (`asymvae.progress`); `progress` shows a bar instead on a
    terminal.
    """
    threads = num_threads or min(8, os.cpu_count() or 1)
    with (
        Progress("checking images", len(indices), "img", logger=log, bar=progress) as shown,
        ThreadPoolExecutor(max_workers=threads) as pool,
    ):
        # Blocks bound the number of pending futures on sources with millions of images.
        block = 256 * threads
        for start in range(0, len(indices), block):
            chunk = indices[start : start + block]
            yield from pool.map(lambda i: _check_one(source, i, min_side, max_side), chunk)
            shown.update(len(chunk))


@dataclass
class ScanReport:
    """Result of `scan_source`: usable indices, and unusable images by name with the reason."""

    good: list[int]
    bad: list[tuple[str, str, str]]
    """(name, reason, kind) of each unusable image."""
    total: int
    description: str = ""
    kinds: dict[str, int] = field(default_factory=dict)
    """Number of bad images per `BadImageError.kind`."""
    listed_in: str | None = None
    """Where the complete list of bad images was written (`bad_image_table`), if anywhere."""

    @property
    def bad_share(self) -> float:
        """Share of unusable images (0 for an empty source)."""
        return len(self.bad) / self.total if self.total else 0.0

    def summary(self) -> str:
        """A readable multi-line report: counts, then up to 20 bad images with their reasons."""
        what = f" of {self.description}" if self.description else ""
        lines = [
            f"Scanned {self.total} images{what}: {len(self.good)} usable, "
            f"{len(self.bad)} unusable ({100 * self.bad_share:.1f}%)."
        ]
        if self.kinds:
            lines.append("  by reason: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())))
        more = f" (all listed in {self.listed_in})" if self.listed_in else ""
        return "\n".join(lines + bad_image_lines(self.bad, more))


def scan_source(
    source: ImageSource,
    min_side: int,
    max_bad_share: float,
    progress: bool = True,
    num_threads: int | None = None,
    bad_list: Path | None = None,
) -> ScanReport:
    """Decodes every image of the source once; returns the usable indices and the bad images with reasons.

    When there are bad images and `bad_list` is given, all of them are written there (`bad_image_table`).
    Raises `DataSourceError` when the source is empty, has no usable image, or when the share of bad
    images exceeds `max_bad_share`.
    """
    total = len(source)
    if total == 0:
        raise DataSourceError(f"{source.description} has no images. Fix: check data.source and data.split.")
    good: list[int] = []
    bad: list[tuple[str, str, str]] = []
    for i, error in check_images(source, range(total), min_side, progress, num_threads):
        if error is None:
            good.append(i)
        else:
            bad.append((source.name(i), error.reason, error.kind))
    kinds = Counter(kind for _, _, kind in bad)
    report = ScanReport(good, bad, total, source.description, dict(kinds))
    if bad and bad_list is not None:
        write_atomic(bad_list, bad_image_table(bad))
        report.listed_in = str(bad_list)
    if not good:
        raise DataSourceError(
            f"no usable image in {source.description}.\n{report.summary()}\n"
            f"Fix: check the files, or lower --data.min-side (now {min_side}) if they are just small."
        )
    if report.bad_share > max_bad_share:
        needed = math.ceil(report.bad_share * 100) / 100
        fixes = [f"repair or remove the files listed above, or accept them with --data.max-bad-share {needed}"]
        if kinds.get("too_small"):
            fixes.append(f"keep small images with --data.min-side <smaller> (now {min_side})")
        raise DataSourceError(
            f"too many unusable images: {len(bad)} of {total} ({100 * report.bad_share:.1f}%) > "
            f"data.max_bad_share={max_bad_share}.\n{report.summary()}\nFix: " + "; or ".join(fixes) + "."
        )
    return report
