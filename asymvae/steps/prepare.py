"""The prepare step: turn a source into shards + manifest, in the step's artifact folder or an object store."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from asymvae.data.prepare import prepare, prepare_config

log = logging.getLogger(__name__)


@dataclass
class PreparedDataset:
    """Where the prepared dataset is and what it holds (recorded as the Dataset artifact's metadata)."""

    manifest_uri: str
    train_samples: int
    val_samples: int
    shards: int
    up_to_date: bool

    def metadata(self) -> dict[str, object]:
        """The artifact metadata (all JSON scalars)."""
        return asdict(self)


def prepare_step(
    source: str, artifact_dir: str, target: str = "", overrides: list[str] | None = None
) -> PreparedDataset:
    """Prepare `source` into `target` (an `s3://bucket/prefix`), or into `artifact_dir` when `target` is empty.

    `overrides` are `prepare.FIELD=VALUE` (see `asymvae prepare --help`). Writing into the artifact folder
    lets KFP store the shards with the pipeline's artifacts; an explicit target keeps one prepared copy that
    every run reuses (an unchanged source and config is "up to date" and costs nothing).
    """
    cfg = prepare_config(list(overrides or []))
    out = target or artifact_dir
    result = prepare(source, out, cfg, progress=False, create_bucket=bool(target))
    m = result.manifest
    found = PreparedDataset(
        manifest_uri=result.manifest_uri,
        train_samples=m.samples("train"),
        val_samples=m.samples("val"),
        shards=len(m.shards),
        up_to_date=result.up_to_date,
    )
    log.info("prepared %s: %s", source, found)
    return found
