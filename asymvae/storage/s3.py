"""`Store` on an S3-compatible bucket through the `minio` SDK, configured from the environment.

The environment variable names are those KFP and KServe use, so the same Secret works for every step:

- endpoint: `S3_ENDPOINT` (KServe; `host:port`), else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or
  `MINIO_ENDPOINT` (URLs with scheme); default AWS (`s3.amazonaws.com`);
- TLS: `S3_USE_HTTPS` (`0`/`1`, KServe), else the endpoint URL's scheme, default on; `S3_VERIFY_SSL=0`
  skips certificate checks (KServe); `AWS_CA_BUNDLE` names a CA file;
- keys: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (or `MINIO_ACCESS_KEY` / `MINIO_SECRET_KEY`),
  optional `AWS_SESSION_TOKEN`; none set = anonymous;
- region: `AWS_REGION` or `AWS_DEFAULT_REGION`, default `us-east-1`;
- `ASYMVAE_S3_RETRIES`: retries after a transient failure (default 5), exponential backoff from 0.5 s;
- `ASYMVAE_S3_DEADLINE`: seconds each request may take in all, its answer included (default 300), plus one
  second per MiB it carries; a server that trickles its answer is cut there (and retried).

Transient failures (connection errors, timeouts, 5xx, SlowDown) are retried with exponential backoff and
jitter; a broken download resumes at the byte it reached. Objects larger than 16 MiB are uploaded in
parts (multipart upload), which S3 publishes atomically when the last part is in.
"""

from __future__ import annotations

import io
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from asymvae.storage.base import CHUNK, ObjectInfo, StorageError, Store
from asymvae.storage.deadline import Deadline, DeadlineExceeded, guarded_pool_manager, within

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_NAMES = (
    "S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL",
    "AWS_CA_BUNDLE", "AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY",
    "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "ASYMVAE_S3_RETRIES", "ASYMVAE_S3_DEADLINE",
)  # fmt: skip
"""Every environment variable `S3Settings.from_env` reads (for passing the store's settings into a container)."""

PART_SIZE = 16 << 20
"""Multipart part size: objects above it are uploaded in parts."""

SECONDS_PER_MIB = 1.0
"""What a request's deadline grows by for each MiB it carries (a floor of 1 MiB/s on any transfer)."""

_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
)
_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"})
_FIX_CREDENTIALS = (
    "Fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY) to keys that "
    "may read and write this bucket (in Kubeflow: the Secret mlpipeline-minio-artifact, keys accesskey/secretkey)."
)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class S3Settings:
    """Connection settings; `from_env()` reads them from the KFP/KServe variable names."""

    endpoint: str = "s3.amazonaws.com"
    """host[:port] without scheme."""
    secure: bool = True
    """Use HTTPS."""
    verify: bool = True
    """Verify the server's TLS certificate."""
    ca_bundle: str | None = None
    """CA certificates file for TLS verification (default: the system's)."""
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str = "us-east-1"
    retries: int = 5
    """Extra attempts after a transient failure."""
    backoff: float = 0.5
    """First retry delay in seconds; doubles on each further retry."""
    deadline: float = 300.0
    """Seconds one request may take in all, its answer included, plus `SECONDS_PER_MIB` per MiB it carries."""

    def deadline_for(self, nbytes: int = 0) -> float:
        """The total deadline of one request carrying `nbytes`."""
        return self.deadline + SECONDS_PER_MIB * nbytes / (1 << 20)

    @classmethod
    def from_env(cls) -> S3Settings:
        """Settings from the environment (see the module docstring for the names)."""
        secure = True
        endpoint = _env("S3_ENDPOINT")
        if endpoint is None:
            url = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
            endpoint = url or "s3.amazonaws.com"
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            secure = parts.scheme == "https"
            endpoint = parts.netloc
        if "@" in endpoint:  # user:password@host: the message shows only the host
            raise StorageError(
                f"the S3 endpoint ({endpoint.rpartition('@')[2]}) is given with credentials in its URL "
                "(user:password@); asymvae takes none from a URL and shows none. Fix: set the endpoint as "
                "http(s)://host:port and the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            )
        use_https = _env("S3_USE_HTTPS")
        if use_https is not None:
            secure = _flag(use_https)
        verify = _env("S3_VERIFY_SSL")
        retries = _env("ASYMVAE_S3_RETRIES")
        deadline = _env("ASYMVAE_S3_DEADLINE")
        return cls(
            endpoint=endpoint.rstrip("/"),
            secure=secure,
            verify=True if verify is None else _flag(verify),
            ca_bundle=_env("AWS_CA_BUNDLE"),
            access_key=_env("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY"),
            secret_key=_env("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY"),
            session_token=_env("AWS_SESSION_TOKEN"),
            region=_env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
            retries=int(retries) if retries is not None else 5,
            deadline=float(deadline) if deadline is not None else 300.0,
        )

    @property
    def endpoint_url(self) -> str:
        """The endpoint with its scheme, for messages."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def client(self) -> Minio:
        """A minio client; retries are done by `S3Store`, so urllib3's own are off."""
        kwargs: dict = {"timeout": urllib3.Timeout(connect=10.0, read=120.0), "retries": False, "maxsize": 16}
        if self.secure:
            if self.verify:
                import certifi

                kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=self.ca_bundle or certifi.where())
            else:
                kwargs.update(cert_reqs="CERT_NONE")
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            session_token=self.session_token,
            secure=self.secure,
            region=self.region,
            http_client=guarded_pool_manager(**kwargs),
            cert_check=self.verify,
        )


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, S3Error):
        return error.code in _TRANSIENT_CODES
    if isinstance(error, ServerError):
        return error.status_code >= 500 or error.status_code == 429
    return isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


class S3Store(Store):
    """Objects under `s3://bucket/prefix`."""

    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None) -> None:
        from minio.helpers import check_bucket_name

        try:
            check_bucket_name(bucket)
        except ValueError as e:
            raise StorageError(
                f"s3://{bucket}: {e} (bucket names have 3-63 lowercase letters, digits, '.', '-')"
            ) from e
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._pid, self._minio = os.getpid(), self.settings.client()

    @property
    def _client(self) -> Minio:
        # A forked process (DataLoader worker, prepare pool) must not share the parent's pooled keep-alive
        # sockets: two processes reading one connection interleave responses. Each process gets its own.
        if self._pid != os.getpid():
            self._pid, self._minio = os.getpid(), self.settings.client()
        return self._minio

    @classmethod
    def from_uri(cls, uri: str, settings: S3Settings | None = None) -> S3Store:
        """From `s3://bucket/prefix` (or `minio://bucket/prefix`)."""
        parts = urlsplit(uri)
        if not parts.netloc:
            raise StorageError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
        return cls(parts.netloc, parts.path, settings)

    def __getstate__(self) -> dict:
        # The client holds a connection pool and locks; workers build their own.
        state = self.__dict__.copy()
        state.pop("_minio")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid, self._minio = os.getpid(), self.settings.client()

    # -- error handling ---------------------------------------------------------------------------

    def _where(self) -> str:
        return f"bucket {self.bucket!r} at endpoint {self.settings.endpoint_url}"

    def _missing_bucket(self, context: str = "") -> StorageError:
        return StorageError(
            f"{self._where()}: the bucket does not exist{context}. Fix: create it (e.g. `mc mb <alias>/{self.bucket}`, "
            "or `asymvae prepare ... --create-bucket`), or correct the URI."
        )

    def _error(self, error: BaseException, action: str) -> StorageError:
        """A StorageError naming endpoint, bucket and the fix; never the secret key."""
        where = self._where()
        if isinstance(error, S3Error):
            if error.code in _AUTH_CODES:
                return StorageError(
                    f"S3 refused the credentials ({error.code}) for {where} (while trying to {action}). "
                    + _FIX_CREDENTIALS
                )
            if error.code == "NoSuchBucket":
                return self._missing_bucket(f" (while trying to {action})")
            if error.code in ("NoSuchKey", "NoSuchObject"):
                return StorageError(f"{self.url(error.object_name or '')} does not exist in {where}")
            return StorageError(f"S3 error {error.code} while trying to {action} in {where}: {error.message}")
        if isinstance(error, ServerError):
            if error.status_code in (401, 403):
                return StorageError(f"S3 refused access (HTTP {error.status_code}) to {where}. {_FIX_CREDENTIALS}")
            return StorageError(f"S3 server error (HTTP {error.status_code}) while trying to {action} in {where}")
        if isinstance(error, DeadlineExceeded):
            return StorageError(
                f"the S3 endpoint {self.settings.endpoint_url} gave {error} while trying to {action} in bucket "
                f"{self.bucket!r}, {self.settings.retries + 1} times. Fix: check that the server and the network "
                "to it are healthy, or allow more time with ASYMVAE_S3_DEADLINE=<seconds>."
            )
        reason = type(error).__name__
        inner = getattr(error, "reason", None)
        if inner is not None:
            reason = f"{reason}: {type(inner).__name__}"
        return StorageError(
            f"cannot reach the S3 endpoint {self.settings.endpoint_url} ({reason}) while trying to {action} in "
            f"bucket {self.bucket!r} after {self.settings.retries + 1} attempts. Fix: check S3_ENDPOINT (or "
            "AWS_ENDPOINT_URL), S3_USE_HTTPS and that the server is up and reachable from here."
        )

    def _call(self, action: str, fn: Callable[[], T], nbytes: int = 0) -> T:
        """`fn()` with retries and backoff on transient errors, each attempt within its total deadline (for a
        request carrying `nbytes`); other errors become a StorageError at once."""
        s = self.settings
        for attempt in range(s.retries + 1):
            try:
                with within(s.deadline_for(nbytes)):
                    return fn()
            except (S3Error, ServerError, urllib3.exceptions.HTTPError, OSError) as e:
                if not _is_transient(e) or attempt == s.retries:
                    raise self._error(e, action) from None
                delay = s.backoff * 2**attempt * (0.5 + random.random())
                log.warning(
                    "S3 %s failed (%s), retry %d/%d in %.1f s", action, type(e).__name__, attempt + 1, s.retries, delay
                )
                time.sleep(delay)
            except (InvalidResponseError, ParseError, ValueError) as e:  # minio could not parse the answer
                raise StorageError(
                    f"the S3 endpoint {s.endpoint_url} gave an answer that is not S3's while trying to {action} in "
                    f"bucket {self.bucket!r} ({type(e).__name__}: {str(e)[:200]}). Fix: point S3_ENDPOINT (or "
                    "AWS_ENDPOINT_URL) at an S3 server, not at a web page or a proxy's error page."
                ) from None
        raise AssertionError("unreachable")

    def _name(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- the interface ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes | BinaryIO, length: int | None = None) -> None:
        """Upload (multipart above 16 MiB); S3 makes the object visible only once complete."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
            length = len(payload)

            def opener() -> BinaryIO:
                return io.BytesIO(payload)
        else:
            start = data.tell()
            if length is None:
                length = data.seek(0, io.SEEK_END) - start

            def opener() -> BinaryIO:
                data.seek(start)
                return data

        name = self._name(key)
        self._call(
            f"upload {name}",
            lambda: self._client.put_object(self.bucket, name, opener(), length, part_size=PART_SIZE),
            nbytes=length,
        )

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """Stream the object; a connection broken mid-way is retried from the byte reached. Each chunk must
        arrive within its own deadline (the time the caller spends between chunks is not the server's)."""
        name = self._name(key)
        offset, failures = 0, 0
        while True:
            response = self._call(
                f"download {name}", lambda at=offset: self._client.get_object(self.bucket, name, offset=at)
            )
            try:
                chunks = response.stream(CHUNK)
                while True:
                    with Deadline(self.settings.deadline_for(CHUNK)) as deadline:
                        deadline.guard(response.connection)
                        chunk = next(chunks, None)
                    if chunk is None:
                        return
                    offset += len(chunk)
                    yield chunk
            except (urllib3.exceptions.HTTPError, OSError) as e:
                failures += 1
                if failures > self.settings.retries:
                    raise self._error(e, f"download {name}") from None
                log.warning("S3 download of %s broke at byte %d (%s), resuming", name, offset, type(e).__name__)
                time.sleep(self.settings.backoff * 2 ** (failures - 1))
            finally:
                response.close()
                response.release_conn()

    def stat(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None."""
        name = self._name(key)

        def head() -> ObjectInfo | None:
            try:
                info = self._client.stat_object(self.bucket, name)
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
            return ObjectInfo(key.strip("/"), int(info.size or 0))

        return self._call(f"look up {name}", head)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects below the root whose relative key starts with `prefix`."""
        full = self._name(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> list[ObjectInfo]:
            objects = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            return [ObjectInfo(o.object_name[cut:], int(o.size or 0)) for o in objects if not o.is_dir]

        return sorted(self._call(f"list {full or '/'}", listing), key=lambda o: o.key)

    def delete(self, key: str) -> None:
        """Remove the object (S3 does not fail on missing keys)."""
        name = self._name(key)
        self._call(f"delete {name}", lambda: self._client.remove_object(self.bucket, name))

    def check(self, create: bool = False) -> None:
        """The bucket must exist and the credentials must work (a listing request proves both)."""
        exists = self._call("check the bucket", lambda: self._client.bucket_exists(self.bucket))
        if not exists:
            if not create:
                raise self._missing_bucket()
            self._call("create the bucket", lambda: self._client.make_bucket(self.bucket))
        # bucket_exists succeeds on some servers for anyone; listing needs valid credentials.
        self._call(
            "list the bucket",
            lambda: next(iter(self._client.list_objects(self.bucket, prefix=self.prefix or None)), None),
        )
