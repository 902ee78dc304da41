"""A real Triton Inference Server for tests: the `tritonserver` binary the `nvidia-pytriton` wheel carries,
serving a Triton repository that `asymvae export --format triton` wrote.

That build has the Python backend only, no ONNX Runtime backend, so each exported model is served by its
Python-backend twin: the export's own `config.pbtxt` (name, inputs, outputs, dims, max_batch_size,
dynamic_batching, instance_group) with `platform: "onnxruntime_onnx"` replaced by `backend: "python"`, and a
`model.py` that runs the export's `1/model.onnx` with onnxruntime. Everything else is Triton's: it parses and
validates the config, checks each request against it (names, datatypes, shapes, batch size), batches, and
speaks the v2 protocol over HTTP (JSON and the binary tensor extension) and gRPC.

The server is started as pytriton starts it (pytriton/triton.py `_prepare_triton_inference_server`,
pytriton/server/triton_server.py `_get_env`): a backend folder holding the Python backend with the stub built
for this interpreter's version, the wheel's `nvidia_pytriton.libs` on LD_LIBRARY_PATH, and this interpreter's
`bin/` first on PATH, so the stub's embedded Python finds the environment's numpy and onnxruntime.

Tensors cross between Triton and the model by DLPack, not `as_numpy()` / `pb_utils.Tensor(name, array)`: the
stub (built against NumPy 1) reads NumPy 2 arrays wrongly there (an output of 0 bytes, inputs of garbage).
NumPy 2 then prints "PyCapsule_GetPointer called with incorrect name" into the server's log when the capsule
the stub consumed is freed; the values are exact (the tests compare them with onnxruntime run directly).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asymvae.serving.client import ServerExited, ServingError, wait_ready
from tests.support.ports import free_port

STARTUP_S = 120.0
_CANNOT_RUN = ("error while loading shared libraries", "cannot execute binary file", "version `GLIBC_")
"""What the dynamic loader says when the machine cannot run the wheel's binaries (a missing libpython3.x.so
for the stub, an older glibc)."""

_MODEL_PY = '''"""Runs 1/model.onnx of the asymvae export with onnxruntime: one session, each request on its own
(requests of different image sizes cannot share a batch)."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        onnx = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests):
        responses = []
        for req in requests:
            feed = {n: np.from_dlpack(pb_utils.get_input_tensor_by_name(req, n)) for n in self.inputs}
            try:
                values = self.session.run(self.outputs, feed)
            except Exception as e:  # the model cannot run these inputs: Triton answers the request's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
                continue
            tensors = [pb_utils.Tensor.from_dlpack(n, v.__dlpack__()) for n, v in zip(self.outputs, values)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton, which carries tritonserver, is not installed (make install adds it)")
    return Path(next(iter(spec.submodule_search_locations)))


def python_backend_twin(exported: Path, twin: Path) -> None:
    """`twin`: a Triton repository with each model of the exported repository `exported` served by the Python
    backend (its config.pbtxt otherwise as exported, its 1/model.onnx run by a model.py)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for folder in sorted(p for p in Path(exported).iterdir() if (p / "config.pbtxt").is_file()):
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        config.ClearField("platform")
        config.backend = "python"
        shutil.copytree(folder, twin / folder.name)
        (twin / folder.name / "config.pbtxt").write_text(text_format.MessageToString(config))
        (twin / folder.name / "1" / "model.py").write_text(_MODEL_PY)


class TritonServer:
    """`with TritonServer(repository, workdir) as url:` tritonserver on free loopback ports, serving the
    Python-backend twin of the exported Triton `repository`; `workdir` holds the twin, the backend folder and
    the server's log. Skips the test when the binary is missing or cannot run on this machine (the dynamic
    loader refuses it or its Python backend stub); a repository Triton refuses (its config, its model) raises
    RuntimeError with the log's end, failing the test."""

    def __init__(self, repository: Path, workdir: Path) -> None:
        self.repository = Path(repository)
        self.workdir = Path(workdir)
        self.log = self.workdir / "tritonserver.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.grpc = ""

    def _backends(self, pytriton: Path) -> Path:
        """The Python backend with the stub of this interpreter's version, as pytriton lays it out."""
        dist = pytriton / "tritonserver"
        backends = self.workdir / "backends"
        shutil.copytree(dist / "backends", backends)
        stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = stub / "triton_python_backend_stub"
        if not stub.is_file():
            pytest.skip(
                f"nvidia-pytriton has no Python backend stub for Python {sys.version_info[0]}.{sys.version_info[1]}"
            )
        shutil.copy(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def _env(self, pytriton: Path) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        libs = str(pytriton.parent / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libs}" if env.get("LD_LIBRARY_PATH") else libs
        env["PATH"] = f"{Path(sys.exec_prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def __enter__(self) -> str:
        pytriton = _pytriton_dir()
        binary = pytriton / "tritonserver" / "bin" / "tritonserver"
        if not binary.is_file():
            pytest.skip(f"{binary} is missing from the nvidia-pytriton install")
        self.workdir.mkdir(parents=True, exist_ok=True)
        twin = self.workdir / "repository"
        python_backend_twin(self.repository, twin)
        http, grpc, metrics = free_port(), free_port(), free_port()
        argv = [str(binary), f"--model-repository={twin}", f"--backend-directory={self._backends(pytriton)}",
                "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--allow-metrics=false",
                "--exit-on-error=true", "--strict-readiness=true"]  # fmt: skip
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=self._env(pytriton))
        self.url, self.grpc = f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self.url

    def _wait_ready(self) -> None:
        try:
            wait_ready(self.url, STARTUP_S, self.proc, poll_s=0.2)
        except ServerExited:
            log = self.log.read_text()
            if any(sign in log for sign in _CANNOT_RUN):  # the binary or its stub, not the repository
                pytest.skip(f"tritonserver cannot run on this machine: {log[-1500:]}")
            errors = "\n".join(line for line in log.splitlines() if line.startswith("E"))  # Triton's E lines
            raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{errors}\n{log[-1000:]}") from None
        except ServingError as e:
            raise RuntimeError(f"tritonserver: {e}:\n{self.log.read_text()[-3000:]}") from None

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
