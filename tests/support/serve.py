"""`asymvae serve` (KServe's real Python model server) in a subprocess on loopback ports, for the tests that
need a running predictor (tests/test_serve.py, the deploy step's runtime=predictor).

kserve is never imported in the pytest process: its v2 protobuf messages share their names with
tritonclient.grpc's, which the export and the client load, and protobuf refuses a second definition in one
process. Hence a subprocess, started with `python -m asymvae serve`, as a user starts it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from asymvae.serving.client import ServingError, wait_ready
from tests.support.ports import free_port

STARTUP_S = 180.0
"""How long the server may take to load the model and answer ready."""


class Served(str):
    """The server's base URL, with its gRPC address as `grpc`."""

    def __new__(cls, base: str, grpc: str) -> Served:
        served = super().__new__(cls, base)
        served.grpc = grpc
        return served


@contextmanager
def asymvae_serve(model_dir: Path, log: Path, *options: str) -> Iterator[Served]:
    """`asymvae serve MODEL_DIR OPTIONS` on free ports until the block ends, yielded once it answers ready
    (`GET /v2/health/ready`); its output goes to `log`, whose tail a failure to start shows. Skips the test
    where the serve extra is not installed."""
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("the serve extra (pip install 'asymvae[serve]') is not installed")
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "asymvae", "serve", str(model_dir), "--http-port", str(port),
            "--grpc-port", str(grpc_port), *options]  # fmt: skip
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base, STARTUP_S, proc)
        except ServingError as e:
            pytest.fail(f"asymvae serve: {e}:\n{log.read_text()[-3000:]}")
        yield Served(base, f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
