"""A real inference server for tests: the Open Inference (KServe v2) REST protocol over a Triton model
repository, each model run with onnxruntime (no Triton can run here; the inference itself is real).

Like Triton it loads `<repository>/<model>/config.pbtxt` and `<model>/1/model.onnx`, answers
`GET /v2/health/ready`, `GET /v2/models/<model>[/ready]` (metadata) and `POST /v2/models/<model>/infer`, and
refuses a request its config does not accept: unknown or missing inputs, another datatype, a rank or fixed
dimension that differs, a batch above `max_batch_size`. Request and response bodies are JSON, or JSON plus
raw tensors (the binary tensor extension `tritonclient.http` uses: `Inference-Header-Content-Length`).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from asymvae.serving.client import NUMPY_DTYPES, ModelIO
from tests.support.http_standin import LoopbackServer

HEADER_LENGTH = "Inference-Header-Content-Length"


class _Model:
    def __init__(self, folder: Path) -> None:
        self.io = ModelIO.from_triton_config(folder)
        self.session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def metadata(self) -> dict[str, Any]:
        def specs(items: list[Any]) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in items]

        return {"name": self.io.model, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": specs(self.io.inputs), "outputs": specs(self.io.outputs)}  # fmt: skip

    def check(self, arrays: dict[str, np.ndarray]) -> str | None:
        """Why Triton would refuse these inputs, or None."""
        names = {s.name for s in self.io.inputs}
        if set(arrays) != names:
            return f"expected inputs {sorted(names)}, got {sorted(arrays)}"
        batches = {a.shape[0] for a in arrays.values()}
        if len(batches) != 1:
            return f"inputs disagree on the batch size: {sorted(batches)}"
        if self.io.max_batch_size and batches.pop() > self.io.max_batch_size:
            return f"batch size exceeds max_batch_size {self.io.max_batch_size}"
        for spec in self.io.inputs:
            array = arrays[spec.name]
            if array.dtype != NUMPY_DTYPES[spec.datatype]:
                return f"input {spec.name!r}: datatype {array.dtype} where the model wants {spec.datatype}"
            if not spec.accepts(array.shape):
                return f"input {spec.name!r}: unexpected shape {list(array.shape)}, model accepts {spec.shape}"
        return None


def _dtype_name(dtype: np.dtype) -> str:
    return {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}[np.dtype(dtype)]


class V2Server:
    """`with V2Server(repository) as url:` a v2 inference server on a free loopback port."""

    def __init__(self, repository: Path) -> None:
        self.models = {p.name: _Model(p) for p in sorted(Path(repository).iterdir()) if (p / "config.pbtxt").is_file()}
        self.requests: list[dict[str, Any]] = []
        self.server = LoopbackServer(self._handler())
        self.url = self.server.url

    def __enter__(self) -> str:
        self.server.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    def infer(self, model: _Model, header: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], list[bytes]]:
        arrays, offset = {}, 0
        for item in header["inputs"]:
            dtype = NUMPY_DTYPES[item["datatype"]]
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(raw[offset : offset + size], dtype=dtype)
                offset += size
            else:
                array = np.asarray(item["data"], dtype=dtype)
            arrays[item["name"]] = array.reshape(item["shape"])
        problem = model.check(arrays)
        if problem:
            raise ValueError(problem)
        wanted = header.get("outputs") or [{"name": s.name} for s in model.io.outputs]
        results = model.session.run([o["name"] for o in wanted], arrays)
        outputs, blobs = [], []
        for spec, value in zip(wanted, results, strict=True):
            item = {"name": spec["name"], "datatype": _dtype_name(value.dtype), "shape": list(value.shape)}
            if (spec.get("parameters") or {}).get("binary_data"):
                blob = np.ascontiguousarray(value).tobytes()
                item["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                item["data"] = value.ravel().tolist()
            outputs.append(item)
        return {"model_name": model.io.model, "model_version": "1", "outputs": outputs}, blobs

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict[str, Any], blobs: list[bytes] | None = None) -> None:
                head = json.dumps(body).encode()
                data = head + b"".join(blobs or [])
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if not blobs else "application/octet-stream")
                if blobs:
                    self.send_header(HEADER_LENGTH, str(len(head)))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _model(self, parts: list[str]) -> _Model | None:
                model = server.models.get(parts[2]) if len(parts) > 2 else None
                if model is None:
                    self._send(404, {"error": f"Request for unknown model: '{parts[2] if len(parts) > 2 else ''}'"})
                return model

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[:3] == ["v2", "health", "ready"]:
                    return self._send(200, {})
                if parts[:2] == ["v2", "models"] and (model := self._model(parts)):
                    self._send(200, {} if parts[3:] == ["ready"] else model.metadata())

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[:2] != ["v2", "models"] or parts[3:] != ["infer"]:
                    return self._send(404, {"error": f"no route {self.path}"})
                model = self._model(parts)
                if model is None:
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                split = int(self.headers.get(HEADER_LENGTH) or len(raw))
                header = json.loads(raw[:split])
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": header})
                try:
                    body, blobs = server.infer(model, header, raw[split:])
                except (ValueError, KeyError) as e:
                    return self._send(400, {"error": str(e)})
                self._send(200, body, blobs)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
