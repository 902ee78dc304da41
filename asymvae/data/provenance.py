"""What a model was trained on, as a training export records it beside `vae/` (`provenance.json`).

The training config says only where the data was to come from (`data.shards`, or `data.source`, whose
default is `builtin:demo` even when shards are used); this record says what was read: for prepared shards
the manifest's fingerprint and the source `asymvae prepare` read, for a source read directly its own
fingerprint. Model cards quote it (asymvae.export.card).
"""

from __future__ import annotations

from typing import Any

from asymvae.data.dataset import TrainImages
from asymvae.data.identity import sample_names, source_fingerprint
from asymvae.data.streaming import ShardStream

__all__ = ["PROVENANCE_NAME", "data_record", "provenance"]

PROVENANCE_NAME = "provenance.json"
"""The record's file name, beside `vae/` and `config.yaml` in a training export."""


def data_record(dataset: ShardStream | TrainImages) -> dict[str, Any]:
    """The training data of `dataset`: `fingerprint` (the prepared dataset's, else the source's), `source`
    (spec, description, images, fingerprint), `train_samples`, and `shards` (the manifest's URI) for shards."""
    if isinstance(dataset, ShardStream):
        return {
            "shards": dataset.data.shards,
            "fingerprint": dataset.manifest.fingerprint,
            "source": dict(dataset.manifest.source),
            "train_samples": dataset.size,
        }
    source, spec = dataset.source, dataset.data.source
    fingerprint = source_fingerprint(source, spec, sample_names(source))
    return {
        "fingerprint": fingerprint,
        "source": {
            "spec": spec,
            "description": source.description,
            "images": len(source),
            "fingerprint": fingerprint,
        },
        "train_samples": len(dataset),
    }


def provenance(base_model: str | None, dataset: ShardStream | TrainImages) -> dict[str, Any]:
    """The record of one training run: the base model's weights as loaded (a folder or hub id; None when trained
    from scratch) and `data_record(dataset)`."""
    return {"base_model": base_model, "data": data_record(dataset)}
