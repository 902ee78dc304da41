"""Call the served decoder over the Open Inference (KServe v2) protocol, the REST API Triton serves.

A request goes to `POST {base}/v2/models/{model}/infer`, where `model` is the model's name in the Triton
repository (the export's `--name`, e.g. `asymvae_decoder`), not the InferenceService's. Its body names
each input with its datatype and shape and carries the values flattened row-major:

    {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 4, 8, 8], "data": [...]},
                {"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [...]},
                {"name": "mask", "datatype": "FP32", "shape": [1, 1, 64, 64], "data": [...]}],
     "outputs": [{"name": "sample"}]}

`ModelIO` describes the tensors (from the export's `config.pbtxt` or the server's model metadata);
`decoder_inputs` makes a well-formed (latent, image, mask) triple; `infer` sends it, by default as raw
tensors after a JSON header (the binary tensor extension, `asymvae.serving.payload`: several times smaller
than the JSON above), as JSON where the server lacks it; `decode` sends it and checks the decoded image's
shape; `check_inference` does all three on made-up inputs (`asymvae.serving.files` reads real ones).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asymvae.errors import UserError
from asymvae.extras import require
from asymvae.serving.payload import PAYLOADS, decode_answer, encode_request
from asymvae.storage.http import Answer, HTTPFault, request

log = logging.getLogger(__name__)

DECODER_INPUTS = ("latent", "image", "mask")
DECODER_OUTPUT = "sample"
DOWNSAMPLING = 8
"""Pixels per latent cell along each side: 8 for every Stable Diffusion-family VAE."""
NUMPY_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_TRITON_TO_V2 = {"TYPE_FP32": "FP32", "TYPE_FP16": "FP16", "TYPE_FP64": "FP64", "TYPE_INT64": "INT64",
                 "TYPE_INT32": "INT32"}  # fmt: skip
_BINARY_REFUSED = (400, 415, 422)
"""What a server without the binary tensor extension answers to a binary body it cannot parse."""


class ServingError(UserError, RuntimeError):
    """The served model did not answer as expected; the message says what was sent and what came back."""


@dataclass
class TensorSpec:
    """One input or output: its name, v2 datatype and shape (batch axis included; -1 = any size)."""

    name: str
    datatype: str
    shape: list[int]

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of `shape` fits (same rank, fixed dims equal)."""
        return len(shape) == len(self.shape) and all(d == -1 or d == s for d, s in zip(self.shape, shape, strict=True))


@dataclass
class ModelIO:
    """The tensors a served model takes and returns."""

    model: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int = 0
    """Largest batch the server accepts (0: no batch axis limit declared)."""

    @classmethod
    def from_triton_config(cls, model_dir: str | Path) -> ModelIO:
        """From `<model_dir>/config.pbtxt` (a Triton model folder of the export): names, types, dims; with
        `max_batch_size > 0` Triton's dims leave out the batch axis, which is added here as -1."""
        model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "serving", "reading a Triton config.pbtxt")
        from google.protobuf import text_format  # installed with tritonclient[grpc]

        path = Path(model_dir) / "config.pbtxt"
        if not path.is_file():
            raise ServingError(f"{path} does not exist: pass the model's folder of a Triton export (`<root>/<name>`)")
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        batch = [-1] if config.max_batch_size > 0 else []

        def specs(tensors: Any) -> list[TensorSpec]:
            return [
                TensorSpec(
                    t.name,
                    _TRITON_TO_V2.get(model_config_pb2.DataType.Name(t.data_type), "?"),
                    batch + list(t.dims),
                )
                for t in tensors
            ]

        return cls(config.name, specs(config.input), specs(config.output), config.max_batch_size)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ModelIO:
        """From the server's model metadata (`GET /v2/models/{model}`)."""

        def specs(items: list[dict[str, Any]]) -> list[TensorSpec]:
            return [TensorSpec(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in items]

        return cls(meta["name"], specs(meta.get("inputs", [])), specs(meta.get("outputs", [])))

    def input(self, name: str) -> TensorSpec:
        """The input called `name`; ServingError naming the inputs there are."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ServingError(f"model {self.model!r} has no input {name!r}; its inputs: {[s.name for s in self.inputs]}")


def decoder_inputs(
    io: ModelIO,
    height: int,
    width: int,
    batch: int = 1,
    seed: int = 0,
    latent: np.ndarray | None = None,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """A (latent, image, mask) request for the exported decoder at `height` x `width` pixels.

    latent: `latent`, else standard normal noise (a scaled latent, as the diffusion model hands it over);
    image: `image`, else random pixels on [-1, 1]; mask: `mask`, else 1 (hole) in a centred box covering a
    quarter of the image, 0 elsewhere. Shapes and datatypes come from `io` and are checked against it.
    """
    if height % DOWNSAMPLING or width % DOWNSAMPLING or height <= 0 or width <= 0:
        raise ServingError(f"height and width must be positive multiples of {DOWNSAMPLING}, got {height}x{width}")
    if io.max_batch_size and batch > io.max_batch_size:
        raise ServingError(f"batch {batch} exceeds the model's max_batch_size {io.max_batch_size}")
    specs = {name: io.input(name) for name in DECODER_INPUTS}
    rng = np.random.default_rng(seed)
    if latent is None:
        channels = specs["latent"].shape[1]
        if channels < 1:
            raise ServingError(f"the latent's channel count is not fixed in {specs['latent'].shape}; pass a latent")
        latent = rng.standard_normal((batch, channels, height // DOWNSAMPLING, width // DOWNSAMPLING))
    if image is None:
        image = rng.uniform(-1.0, 1.0, (batch, 3, height, width))
    if mask is None:
        mask = np.zeros((batch, 1, height, width))
        mask[:, :, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1.0
    arrays = {"latent": latent, "image": image, "mask": mask}
    out = {}
    for name, array in arrays.items():
        spec = specs[name]
        if not spec.accepts(array.shape):
            raise ServingError(f"input {name!r} of shape {list(array.shape)} does not fit the model's {spec.shape}")
        out[name] = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[spec.datatype])
    return out


def infer_request(inputs: dict[str, np.ndarray], io: ModelIO, outputs: tuple[str, ...] = (DECODER_OUTPUT,)) -> dict:
    """The JSON body of a v2 inference request (values flattened row-major)."""
    return {
        "inputs": [
            {"name": n, "datatype": io.input(n).datatype, "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ],
        "outputs": [{"name": n} for n in outputs],
    }


def _send(method: str, url: str, data: bytes | None, headers: dict[str, str], timeout_s: float) -> Answer:
    """One request with a total deadline, to `url`'s host only (`storage.http.request`); any status."""
    try:
        return request(method, url, data, headers, timeout_s)
    except HTTPFault as e:
        raise ServingError(str(e)) from None


def _accepted(method: str, url: str, answer: Answer) -> Answer:
    """`answer`, unless its status is an error: then a ServingError quoting the start of its body."""
    if answer.status >= 400:
        detail = answer.body.decode(errors="replace")[:500]
        raise ServingError(f"{method} {url} answered HTTP {answer.status}: {detail}")
    return answer


def _http(method: str, url: str, body: dict | None, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One JSON request with a total deadline, to `url`'s host only (`storage.http.request`)."""
    data = json.dumps(body).encode() if body is not None else None
    answer = _send(method, url, data, {"Content-Type": "application/json", **headers}, timeout_s)
    try:
        return json.loads(_accepted(method, url, answer).body)
    except ValueError:
        raise ServingError(f"{method} {url} answered something that is not JSON: {answer.body[:200]!r}") from None


def model_url(base_url: str, model: str) -> str:
    """`{base}/v2/models/{model}`: Triton's route names the model in its repository, not the InferenceService."""
    return f"{base_url.rstrip('/')}/v2/models/{model}"


def fetch_model_io(
    base_url: str, model: str, headers: dict[str, str] | None = None, timeout_s: float = 30.0
) -> ModelIO:
    """The served model's tensors, from `GET /v2/models/{model}`."""
    return ModelIO.from_metadata(_http("GET", model_url(base_url, model), None, headers or {}, timeout_s))


class ServerExited(ServingError):
    """The server process being waited for ended before it was ready."""


def wait_ready(base_url: str, timeout_s: float, process: subprocess.Popen | None = None, poll_s: float = 0.5) -> None:
    """Wait until the v2 server at `base_url` answers `GET /v2/health/ready` with 200 (a server answers it only
    once its models are loaded). `process`: the server's process, when the caller started it: ServerExited as
    soon as it ends. ServingError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"the server for {base_url} exited with {process.returncode} before it was ready")
        try:
            if request("GET", f"{base_url.rstrip('/')}/v2/health/ready", None, {}, 5.0).status == 200:
                return
        except HTTPFault:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise ServingError(f"{base_url} was not ready after {timeout_s:g} s (GET /v2/health/ready)")
        time.sleep(poll_s)


def infer(
    base_url: str,
    io: ModelIO,
    inputs: dict[str, np.ndarray],
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    payload: str = "auto",
) -> dict[str, np.ndarray]:
    """Send one inference; returns each output as an array of the shape the server reports.

    `payload`: `binary` tensors, `json` numbers, or `auto`: binary, sent again as JSON when the server refuses
    the binary body (HTTP 400, 415 or 422: a server without the binary tensor extension cannot parse it).
    """
    if payload not in PAYLOADS:
        raise ServingError(f"payload {payload!r}: choose one of {', '.join(PAYLOADS)}")
    url = model_url(base_url, io.model) + "/infer"
    datatypes = {name: io.input(name).datatype for name in inputs}

    def post(binary: bool) -> Answer:
        body, body_headers = encode_request(inputs, datatypes, (DECODER_OUTPUT,), binary)
        return _send("POST", url, body, {**body_headers, **(headers or {})}, timeout_s)

    answer = post(binary=payload != "json")
    if payload == "auto" and answer.status in _BINARY_REFUSED:
        log.info("%s answered HTTP %d to a binary request; sending it as JSON", url, answer.status)
        answer = post(binary=False)
    _accepted("POST", url, answer)
    try:
        return decode_answer(answer.body, answer.headers)
    except ValueError as e:
        raise ServingError(f"POST {url} answered {e}") from None


@dataclass
class InferenceCheck:
    """One request's outcome: what went out, what came back, how long it took."""

    url: str
    model: str
    input_shapes: dict[str, list[int]]
    output_shape: list[int]
    seconds: float
    value_range: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return dict(self.__dict__)


def check_inference(
    base_url: str,
    io: ModelIO,
    height: int = 64,
    width: int = 64,
    batch: int = 1,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    payload: str = "auto",
) -> InferenceCheck:
    """Send one (latent, image, mask) request and check that `sample` comes back as a finite (B, 3, H, W) image.

    `payload`: as `infer`'s."""
    inputs = decoder_inputs(io, height, width, batch)
    start = time.perf_counter()
    sample = decode(base_url, io, inputs, headers, timeout_s, payload)
    seconds = time.perf_counter() - start
    return InferenceCheck(
        base_url,
        io.model,
        {k: list(v.shape) for k, v in inputs.items()},
        list(sample.shape),
        round(seconds, 3),
        (float(sample.min()), float(sample.max())),
    )


def decode(
    base_url: str,
    io: ModelIO,
    inputs: dict[str, np.ndarray],
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    payload: str = "auto",
) -> np.ndarray:
    """Send `inputs` (as `decoder_inputs` makes them) and return `sample`, checked to be a finite image of the
    request's batch and size, (B, 3, H, W); ServingError saying what came back otherwise."""
    outputs = infer(base_url, io, inputs, headers, timeout_s, payload)
    sample = outputs.get(DECODER_OUTPUT)
    batch, _, height, width = inputs["image"].shape
    expected = [batch, 3, height, width]
    if sample is None:
        raise ServingError(f"{model_url(base_url, io.model)}/infer returned no {DECODER_OUTPUT!r}: {sorted(outputs)}")
    if list(sample.shape) != expected or not np.isfinite(sample).all():
        raise ServingError(
            f"{model_url(base_url, io.model)}/infer returned {DECODER_OUTPUT!r} of shape {list(sample.shape)} "
            f"(finite: {bool(np.isfinite(sample).all())}); expected a finite image of shape {expected}"
        )
    return sample
