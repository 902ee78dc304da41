"""The manifest of a prepared dataset: what shards exist, how many samples each holds, and their checksums.

It is the last object `asymvae prepare` writes, so a reader that finds it finds every shard it lists,
complete. Shard names are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asymvae.storage import StorageError, Store, open_store, split_uri

MANIFEST_NAME = "manifest.json"
FORMAT = "asymvae-shards/1"


class ManifestError(StorageError):
    """A manifest.json that is not a manifest of this format."""


@dataclass(frozen=True)
class ShardInfo:
    """One tar shard."""

    name: str
    """Key relative to the manifest's folder."""
    split: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """A prepared dataset."""

    fingerprint: str
    """Hash of the source fingerprint and the prepare config: equal fingerprints mean identical shards."""
    source: dict[str, Any]
    """spec, description, fingerprint and number of images of the source."""
    config: dict[str, Any]
    """The PrepareConfig used."""
    shards: list[ShardInfo]
    splits: dict[str, dict[str, int]]
    """Per split: samples and shards."""
    bad: dict[str, Any] = field(default_factory=dict)
    """count, kinds (count per reason) and files (name, reason) of the images that were skipped."""
    created: str = ""
    format: str = FORMAT

    def shards_of(self, split: str) -> list[ShardInfo]:
        """The shards of one split, in order."""
        return [s for s in self.shards if s.split == split]

    def samples(self, split: str) -> int:
        """Number of samples in a split."""
        return sum(s.samples for s in self.shards_of(split))

    def check_counts(self) -> None:
        """Raise ValueError unless each split's recorded samples and shards are those of its shards."""
        for split, recorded in self.splits.items():
            found = {"samples": self.samples(split), "shards": len(self.shards_of(split))}
            if {k: recorded.get(k) for k in found} != found:
                raise ValueError(f"split {split!r} records {recorded}, its shards hold {found}")

    def to_json(self) -> str:
        """Serialised form."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        """Parse (raises ManifestError on anything that is not a manifest of this format)."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            data["shards"] = [ShardInfo(**s) for s in data["shards"]]
            manifest = cls(**data)
            manifest.check_counts()
            return manifest
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ManifestError(f"{where} is not a valid asymvae manifest ({e}). Fix: re-run `asymvae prepare`.") from e


def written_by_asymvae(text: str) -> bool:
    """Whether a manifest.json's text is asymvae's, valid or damaged: it names this manifest format."""
    return f'"{FORMAT.split("/")[0]}/' in text


def locate(uri: str) -> tuple[Store, str]:
    """The store holding a dataset and the manifest's key in it, from the manifest's URI or its folder."""
    uri = uri.strip().rstrip("/")
    if uri.endswith(".json"):
        parent, name = split_uri(uri)
        return open_store(parent), name
    return open_store(uri), MANIFEST_NAME


def is_prepared_dataset(uri: str) -> bool:
    """Whether `uri` names a dataset of `asymvae prepare`: any `s3://` location (the only kind it writes
    there), a local manifest.json, or a local folder holding one."""
    from asymvae.storage.factory import is_s3_uri

    if is_s3_uri(uri.strip()):
        return True
    path = Path(uri).expanduser()
    return (path.name == MANIFEST_NAME and path.is_file()) or (path / MANIFEST_NAME).is_file()


def read_manifest(store: Store, key: str = MANIFEST_NAME) -> Manifest | None:
    """The manifest at `key` in `store`, or None when there is none (ManifestError when it is not valid)."""
    if store.stat(key) is None:
        return None
    return Manifest.from_json(store.get(key).decode(), store.url(key))


def load_manifest(uri: str) -> tuple[Manifest, Store]:
    """Read a manifest; returns it and the store its shard names are relative to."""
    store, key = locate(uri)
    manifest = read_manifest(store, key)
    if manifest is None:
        raise StorageError(
            f"no dataset manifest at {store.url(key)}. Fix: run `asymvae prepare SOURCE --out {store.uri}` first, "
            "or point at the folder/prefix that holds manifest.json."
        )
    return manifest, store
