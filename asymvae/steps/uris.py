"""Artifact locations as the steps see them: KFP's `minio://` URIs, object-store URIs, local paths."""

from __future__ import annotations

import hashlib
import os

from asymvae.storage.factory import is_s3_uri


def store_uri(uri: str) -> str:
    """The asymvae storage URI of a KFP artifact URI.

    KFP on a cluster names artifacts `minio://bucket/key` (its S3 store: SeaweedFS in current KFP, MinIO
    before), which asymvae reads as `s3://bucket/key` with S3_ENDPOINT pointing at that service.
    `s3://` URIs and local paths (kfp.local) are returned unchanged.
    """
    if uri.startswith("minio://"):
        return "s3://" + uri[len("minio://") :]
    return uri


def job_name(prefix: str, artifact_uri: str) -> str:
    """A DNS-label job name that is the same for every retry of one pipeline task (its output's URI).

    A retried task finds the job it created before and adopts it (see asymvae.cluster.runner), while
    another run, whose artifacts live elsewhere, gets another name.
    """
    return f"{prefix}-{hashlib.sha256(artifact_uri.encode()).hexdigest()[:10]}"


def shards_uri(manifest_uri: str, artifact_uri: str) -> str:
    """Where every later reader (the train step, a cluster job's pods) finds a prepared dataset's manifest.

    An object-store manifest (prepare with a `target`) is read there. A dataset written into the prepare
    step's artifact is read where KFP stores that artifact (`minio://` on a cluster, read as `s3://`; a local
    folder in kfp.local runs), so the train step passes a string on and never downloads the shards itself.
    """
    if is_s3_uri(manifest_uri):
        return store_uri(manifest_uri)
    return store_uri(artifact_uri).rstrip("/") + "/manifest.json"


def task_store(artifact_uri: str) -> str:
    """The object-store prefix of the task that writes the output artifact `artifact_uri` (its folder beside
    the artifact: `s3://bucket/.../train/<task>`), the same for every retry of the task; "" when the
    artifact is not in an object store (kfp.local runs)."""
    uri = store_uri(artifact_uri)
    return uri.rstrip("/").rsplit("/", 1)[0] if is_s3_uri(uri) else ""


def use_store_endpoint(endpoint: str, use_https: bool = False) -> None:
    """Point this process's object-store client at `endpoint` (S3_ENDPOINT, S3_USE_HTTPS); empty leaves the
    environment as it is (kfp.local runs, or a step whose environment already names the store)."""
    if endpoint:
        os.environ["S3_ENDPOINT"] = endpoint
        os.environ["S3_USE_HTTPS"] = "1" if use_https else "0"
