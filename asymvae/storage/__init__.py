"""One interface for the local file system and S3-compatible object stores (MinIO, SeaweedFS, AWS S3).

`open_store(uri)` returns a `Store` rooted at a local folder (`/data/x`, `file:///data/x`) or at an
`s3://bucket/prefix` (credentials and endpoint from the environment, see `asymvae.storage.s3`). Keys
are relative to that root, `/`-separated.
"""

from asymvae.storage.base import ChecksumError, ObjectInfo, StorageError, Store, join_uri, split_uri
from asymvae.storage.factory import open_store

__all__ = ["ChecksumError", "ObjectInfo", "StorageError", "Store", "join_uri", "open_store", "split_uri"]
