"""Bodies of v2 inference requests and answers: JSON, or JSON plus raw tensors (the binary tensor extension).

In the binary form (Triton's and KServe's `binary_tensor_data` extension) a body is a JSON header followed by
each tensor's bytes, row-major and little-endian, in the order the header lists them: every binary tensor
gives its byte count in `parameters.binary_data_size`, and the HTTP header `Inference-Header-Content-Length`
gives the JSON header's length. An output asked for with `parameters.binary_data: true` comes back the same
way; a server without the extension answers in JSON, which `decode_answer` reads as well. Binary tensors take
4 bytes a value (a 512² request: 4.3 MB), JSON their decimal text, several times that (tests/test_serve.py
checks more than 3x).

The encoding and decoding are `tritonclient.http`'s own (`InferenceServerClient.generate_request_body` and
`parse_response_body`, static methods that need no connection); the transport stays the caller's.
"""

from __future__ import annotations

import numpy as np

from asymvae.extras import require

PAYLOADS = ("auto", "binary", "json")
"""How a request travels: `binary` tensors, `json` numbers, or `auto` (binary, and JSON again where a
server refuses binary bodies)."""
HEADER_LENGTH = "Inference-Header-Content-Length"


def encode_request(
    inputs: dict[str, np.ndarray], datatypes: dict[str, str], outputs: tuple[str, ...], binary: bool
) -> tuple[bytes, dict[str, str]]:
    """The body of `POST /v2/models/{model}/infer` and the HTTP headers it needs.

    `datatypes`: each input's v2 datatype (e.g. FP32); `outputs`: the outputs asked for (in binary when
    `binary`)."""
    http = require("tritonclient.http", "serving", "binary v2 payloads")
    InferenceServerClient, InferInput, InferRequestedOutput = (
        http.InferenceServerClient,
        http.InferInput,
        http.InferRequestedOutput,
    )

    tensors = []
    for name, array in inputs.items():
        tensor = InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    wanted = [InferRequestedOutput(name, binary_data=binary) for name in outputs]
    body, json_size = InferenceServerClient.generate_request_body(tensors, wanted)
    if json_size is None:
        return body, {"Content-Type": "application/json"}
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(json_size)}


def decode_answer(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    """Each output of an inference answer (JSON, or JSON plus binary tensors) as an array of its shape.

    `headers`: the answer's HTTP headers, names in lower case. A malformed body raises ValueError."""
    InferenceServerClient = require("tritonclient.http", "serving", "binary v2 payloads").InferenceServerClient

    length = headers.get(HEADER_LENGTH.lower())
    try:
        result = InferenceServerClient.parse_response_body(body, header_length=int(length) if length else None)
        names = [item["name"] for item in result.get_response()["outputs"]]
        return {name: result.as_numpy(name) for name in names}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a v2 inference answer ({type(e).__name__}: {e}): {body[:200]!r}") from None
