"""prepare: a data source → checksummed tar shards + manifest, as a Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(
    dataset: Output[Dataset],
    shards: dsl.OutputPath(str),
    source: str = "builtin:demo",
    target: str = "",
    overrides: list = [],  # noqa: B006 - KFP compiles the default; the function never changes it
    s3_endpoint: str = "",
    s3_use_https: bool = False,
):
    """Prepare `source` (hub id, image/dataset folder, parquet, `builtin:demo`) into shards.

    Args:
        dataset: The prepared dataset: shards + manifest.json in the artifact's folder, or, with `target`,
            only metadata whose `manifest_uri` points at the object store.
        shards: Where the manifest is read by the steps after this one (an `s3://` URI on a cluster; a path
            in local runs): the train component's `shards`.
        source: What to prepare (`asymvae prepare SOURCE`).
        target: `s3://bucket/prefix` to prepare into instead of the artifact (shared, reused when unchanged).
        overrides: `prepare.FIELD=VALUE` settings, e.g. `prepare.max_side=512`.
        s3_endpoint: Object-store endpoint (host:port) for `s3://` sources and targets; empty: the environment's.
        s3_use_https: TLS to the object store.
    """
    from pathlib import Path

    from asymvae.steps.prepare import prepare_step
    from asymvae.steps.uris import shards_uri, use_store_endpoint

    use_store_endpoint(s3_endpoint, s3_use_https)
    found = prepare_step(source, dataset.path, target=target, overrides=overrides)
    dataset.metadata.update(found.metadata())
    Path(shards).write_text(shards_uri(found.manifest_uri, dataset.uri))
