"""`open_store(uri)`: the right `Store` for a local path or an `s3://` URI."""

from __future__ import annotations

from asymvae.storage.base import StorageError, Store


def is_s3_uri(uri: str) -> bool:
    """Whether `uri` names an S3 location."""
    return uri.startswith(("s3://", "minio://"))


def open_store(uri: str) -> Store:
    """A store rooted at `uri`: `s3://bucket[/prefix]` (also `minio://`, KFP's spelling) or a local folder."""
    uri = uri.strip()
    if not uri:
        raise StorageError("empty storage location: give a folder or s3://bucket/prefix")
    if is_s3_uri(uri):
        from asymvae.storage.s3 import S3Store

        return S3Store.from_uri(uri)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise StorageError(f"unsupported storage scheme {scheme!r} in {uri!r}: use a local path or s3://bucket/prefix")
    from asymvae.storage.local import LocalStore

    return LocalStore(uri.removeprefix("file://"))
