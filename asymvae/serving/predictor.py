"""`asymvae serve`: the torch decoder as a KServe custom predictor, on KServe's Python model server.

`DecoderPredictor` is a `kserve.Model` (kserve/model.py): `load()` reads the exported diffusers folder onto
the device (float16 on a GPU, float32 on a CPU) and only then sets `ready`, and `predict()` answers a v2
inference request (kserve/protocol/infer_type.py: `InferRequest` in, `InferResponse` out) with the same
interface as the exported ONNX graph and Triton model (`asymvae.export.onnx`): inputs `latent`
(B, C, h, w, scaled as the diffusion model hands it over), `image` (B, 3, 8h, 8w on [-1, 1]) and `mask`
(B, 1, 8h, 8w, 1 = hole), output `sample` (B, 3, 8h, 8w), all FP32. An image with a side above
`ServeConfig.tile_above` decodes in tiles with shared GroupNorm statistics (`asymvae.model.decode`).

`serve()` hands the loaded predictor to `kserve.ModelServer` (kserve/model_server.py), which serves the
v1/v2 REST routes (kserve/protocol/rest/v2_endpoints.py: health, metadata, `/v2/models/NAME/infer`, binary
tensors after a JSON header when the request carries `Inference-Header-Content-Length`,
kserve/protocol/dataplane.py), v2 gRPC, and Prometheus metrics at `/metrics` (kserve/metrics.py: request
latency histograms per model; `asymvae_decode_batch_requests` is this module's). The server starts listening
only after the model has loaded, so a readiness probe (`/v2/health/ready`, `/v2/models/NAME/ready`) never
sees a model that is not there.

KServe's Python server has no request batching of its own (the InferenceService's `batcher` is a sidecar
of the cluster); `_Batcher` here merges concurrent requests: decodes run one at a time, and the requests
that arrive meanwhile with tensors of the same height and width go into the next decode together, up to
`max_batch_size` images.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import kserve
import numpy as np
import torch
from diffusers import AsymmetricAutoencoderKL
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid
from prometheus_client import Histogram

from asymvae.config import ConfigError
from asymvae.export.onnx import INPUT_NAMES, OUTPUT_NAMES
from asymvae.model.decode import decode_latents, upsampling_factor
from asymvae.model.files import load_vae
from asymvae.model.latent_space import LatentTransform
from asymvae.serving.config import ServeConfig

log = logging.getLogger(__name__)

BATCH_REQUESTS = Histogram(
    "asymvae_decode_batch_requests", "Requests decoded together in one batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
"""Served at `/metrics` beside KServe's own (its `_count` is the number of decodes, `_sum` of requests)."""


def _device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no GPU is visible to torch here; pass --device cpu or auto")
    return torch.device(choice)


@dataclass
class _Pending:
    arrays: dict[str, np.ndarray]
    done: asyncio.Future


class _Batcher:
    """Runs `decode` one batch at a time in a worker thread; concurrent requests with tensors of the same
    shape (but the batch axis) are concatenated into one batch of up to `max_images`, then split again."""

    def __init__(self, decode: Callable[[dict[str, np.ndarray]], np.ndarray], max_images: int) -> None:
        self.decode = decode
        self.max_images = max_images
        self.waiting: list[_Pending] = []
        self.worker: asyncio.Task | None = None

    async def submit(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The decoded `sample` of one request."""
        pending = _Pending(arrays, asyncio.get_running_loop().create_future())
        self.waiting.append(pending)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._work())
        return await pending.done

    def _next_batch(self) -> list[_Pending]:
        def key(p: _Pending) -> tuple:
            return tuple(a.shape[1:] for a in p.arrays.values())

        first = self.waiting[0]
        batch, images = [], 0
        for p in list(self.waiting):
            size = p.arrays["latent"].shape[0]
            if p is first or (key(p) == key(first) and images + size <= self.max_images):
                batch.append(p)
                images += size
                self.waiting.remove(p)
        return batch

    async def _work(self) -> None:
        while self.waiting:
            batch = self._next_batch()
            BATCH_REQUESTS.observe(len(batch))
            merged = {name: np.concatenate([p.arrays[name] for p in batch]) for name in INPUT_NAMES}
            try:
                sample = await asyncio.to_thread(self.decode, merged)
            except Exception as e:  # every request of the batch fails with it (the server answers 500)
                for p in batch:
                    p.done.set_exception(e)
                continue
            start = 0
            for p in batch:
                size = p.arrays["latent"].shape[0]
                p.done.set_result(sample[start : start + size])
                start += size


class DecoderPredictor(kserve.Model):
    """The mask-conditioned decoder of an exported `AsymmetricAutoencoderKL` as a KServe predictor."""

    def __init__(self, cfg: ServeConfig) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        self.device = _device(cfg.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.vae: AsymmetricAutoencoderKL | None = None
        self.batcher = _Batcher(self._decode, cfg.max_batch_size)

    def load(self) -> bool:
        """Read the model onto the device; `ready` turns true only then."""
        vae = load_vae(self.cfg.model_dir, require=AsymmetricAutoencoderKL)
        try:  # tiles must be whole latent pixels: say so now, not at the first large image
            self.cfg.tiling.in_latents(upsampling_factor(vae))
        except ValueError as e:
            raise ConfigError(f"--tile {self.cfg.tile} --tile-overlap {self.cfg.tile_overlap}: {e}") from None
        self.vae = vae.to(self.device, self.dtype)
        self.transform = LatentTransform.of(vae.config)
        log.info("loaded %s from %s on %s (%s)", type(vae).__name__, self.cfg.model_dir, self.device, self.dtype)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        """The v2 metadata of the inputs (-1: any size)."""
        channels = self.vae.config.latent_channels if self.vae is not None else -1
        shapes = {"latent": [-1, channels, -1, -1], "image": [-1, 3, -1, -1], "mask": [-1, 1, -1, -1]}
        return [{"name": name, "datatype": "FP32", "shape": shapes[name]} for name in INPUT_NAMES]

    def get_output_types(self) -> list[dict]:
        """The v2 metadata of the output."""
        return [{"name": name, "datatype": "FP32", "shape": [-1, 3, -1, -1]} for name in OUTPUT_NAMES]

    def _arrays(self, payload: InferRequest) -> dict[str, np.ndarray]:
        """The request's tensors as float32 arrays, checked against the model (InvalidInput: HTTP 400)."""
        given = {t.name: t for t in payload.inputs}
        if sorted(given) != sorted(INPUT_NAMES):
            raise InvalidInput(f"expected inputs {list(INPUT_NAMES)}, got {sorted(given)}")
        arrays = {}
        for name in INPUT_NAMES:
            if given[name].datatype not in ("FP32", "FP16"):
                raise InvalidInput(f"input {name!r}: datatype {given[name].datatype}, expected FP32")
            arrays[name] = np.asarray(given[name].as_numpy(), dtype=np.float32)
            if arrays[name].ndim != 4:
                raise InvalidInput(f"input {name!r} has shape {list(arrays[name].shape)}: expected 4-D NCHW")
        f, (b, _, h, w) = upsampling_factor(self.vae), arrays["latent"].shape
        want = {"latent": (b, self.vae.config.latent_channels, h, w), "image": (b, 3, h * f, w * f),
                "mask": (b, 1, h * f, w * f)}  # fmt: skip
        for name, shape in want.items():
            if arrays[name].shape != shape:
                raise InvalidInput(
                    f"input {name!r} has shape {list(arrays[name].shape)}; a latent of {list(arrays['latent'].shape)}"
                    f" needs {list(shape)}"
                )
        return arrays

    def _decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Decode one batch (in the batcher's worker thread)."""

        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(arrays[name]).to(self.device, self.dtype)

        latent = tensor("latent")
        large = max(arrays["image"].shape[-2:]) > self.cfg.tile_above
        with torch.inference_mode():
            z = self.transform.to_vae(latent)
            sample = decode_latents(self.vae, z, tensor("image"), tensor("mask"), self.cfg.tiling if large else None)
        return sample.float().cpu().numpy()

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        """Decode the request's (latent, image, mask) to `sample`."""
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model answers the v2 protocol only: POST /v2/models/NAME/infer")
        sample = await self.batcher.submit(self._arrays(payload))
        output = InferOutput(OUTPUT_NAMES[0], list(sample.shape), "FP32")
        # As raw bytes: KServe re-encodes them as each protocol asks (to_rest, to_grpc in infer_type.py); an
        # array given as `data` fails to_grpc (it tests the array's truth value) when gRPC inputs were raw.
        output.set_data_from_numpy(sample, binary_data=True)
        return InferResponse(
            payload.id or generate_uuid(),  # a JSON answer must carry an id; a request need not
            self.name,
            [output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def serve(cfg: ServeConfig) -> None:
    """Load the model, then run KServe's model server until it is stopped (SIGINT or SIGTERM)."""
    predictor = DecoderPredictor(cfg)
    predictor.load()
    server = kserve.ModelServer(
        http_port=cfg.http_port, grpc_port=cfg.grpc_port or 8081, enable_grpc=cfg.grpc_port > 0, workers=1
    )
    server.start([predictor])
