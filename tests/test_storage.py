"""The storage layer on a local folder and on a real S3 server (SeaweedFS): operations, errors, checksums."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from asymvae.storage import ChecksumError, StorageError, open_store
from asymvae.storage.s3 import S3Settings


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])  # s3: a SeaweedFS server
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "root"))
    request.getfixturevalue("s3_env")
    return open_store(f"s3://asymvae/test-{uuid.uuid4().hex[:8]}")


def test_put_get_list_stat_delete(store):
    store.check()
    store.put("a/one.bin", b"1" * 10)
    store.put("a/b/two.bin", b"22")
    store.put("a/one.bin", b"new")  # overwrite
    assert store.get("a/one.bin") == b"new"
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/b/two.bin", 2), ("a/one.bin", 3)]
    assert store.stat("a/b/two.bin").size == 2 and store.stat("missing") is None
    assert store.exists("a/one.bin") and not store.exists("a/none")
    store.delete("a/one.bin")
    assert not store.exists("a/one.bin")
    store.delete("a/none/at/all.bin")  # a missing object, in folders that do not exist either: no error
    with pytest.raises(StorageError):
        store.get("a/one.bin")


def test_large_object_streams_in_chunks_and_checksum_is_verified(store, tmp_path):
    data = os.urandom(20 << 20)  # above the 16 MiB part size: a multipart upload on S3
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        store.put("big.bin", f)
    chunks = list(store.iter_chunks("big.bin"))
    assert len(chunks) > 1 and b"".join(chunks) == data
    digest = hashlib.sha256(data).hexdigest()
    assert store.get_verified("big.bin", digest, len(data)) == data
    store.put("big.bin", data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(ChecksumError, match="corrupt"):
        store.get_verified("big.bin", digest, len(data))


_INHERITED = {}


def _read_inherited(i: int) -> tuple[str, bool]:
    store = _INHERITED["store"]
    return hashlib.sha256(store.get(f"blob{i % 3}")).hexdigest(), store._client is _INHERITED["client"]


def test_forked_processes_do_not_share_the_parents_connections(s3_env):
    import multiprocessing

    store = open_store(f"s3://asymvae/fork-{uuid.uuid4().hex[:8]}")
    blobs = [os.urandom(4 << 20) for _ in range(3)]
    for i, blob in enumerate(blobs):
        store.put(f"blob{i}", blob)
    assert store.get("blob0") == blobs[0]  # the parent now holds a pooled keep-alive connection
    # Inherited by fork, not pickled: the case of DataLoader workers and prepare's pool.
    _INHERITED.update(store=store, client=store._client)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_read_inherited, range(8), chunksize=1)
    assert [d for d, _ in results] == [hashlib.sha256(blobs[i % 3]).hexdigest() for i in range(8)]
    assert not any(shared for _, shared in results), "a child used the parent's connection pool"


def test_wrong_credentials_name_endpoint_and_bucket_but_not_the_secret(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-xyz")
    with pytest.raises(StorageError) as e:
        open_store("s3://asymvae/x").check()
    message = str(e.value)
    assert s3_env.endpoint in message and "'asymvae'" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret-xyz" not in message and s3_env.secret_key not in message


def test_missing_bucket(s3_env):
    with pytest.raises(StorageError, match="bucket does not exist") as e:
        open_store("s3://no-such-bucket/x").check()
    assert s3_env.endpoint in str(e.value) and "no-such-bucket" in str(e.value)
    store = open_store(f"s3://created-{uuid.uuid4().hex[:6]}/x")
    store.check(create=True)
    store.put("k", b"v")
    assert store.get("k") == b"v"


def test_unreachable_endpoint(monkeypatch):
    from asymvae.storage.local_s3 import free_ports

    port = free_ports(1)[0]  # nothing listens there
    monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("ASYMVAE_S3_RETRIES", "1")
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as e:
        open_store("s3://bucket/x").check()
    assert f"http://127.0.0.1:{port}" in str(e.value) and "'bucket'" in str(e.value)


def test_settings_follow_kserve_and_aws_variable_names(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("S3_", "AWS_", "MINIO_")):
            monkeypatch.delenv(name)
    assert S3Settings.from_env().endpoint_url == "https://s3.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-service.kubeflow:9000")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "minio")
    s = S3Settings.from_env()
    assert (s.endpoint, s.secure, s.access_key) == ("minio-service.kubeflow:9000", False, "minio")
    monkeypatch.setenv("S3_ENDPOINT", "store:443")  # KServe's name wins, TLS from S3_USE_HTTPS
    monkeypatch.setenv("S3_USE_HTTPS", "1")
    monkeypatch.setenv("S3_VERIFY_SSL", "0")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = S3Settings.from_env()
    assert (s.endpoint, s.secure, s.verify, s.region) == ("store:443", True, False, "eu-west-1")


def test_bad_uris():
    with pytest.raises(StorageError, match="bucket names"):
        open_store("s3://x/y")
    with pytest.raises(StorageError, match="unsupported storage scheme"):
        open_store("gs://bucket/y")


def test_the_suites_s3_server_holds_many_buckets_whatever_the_free_disk(s3_env):
    """Each bucket takes 7 SeaweedFS volumes at its first write; with slots derived from the free disk
    (`-volume.max=0`) a machine with 12 GB free failed the third bucket with InternalError."""
    for _ in range(12):
        store = open_store(f"s3://many-{uuid.uuid4().hex[:6]}/x")
        store.check(create=True)
        store.put("k", b"v")
        assert store.get("k") == b"v"
