"""`asymvae infer URL --model NAME`: send one (latent, image, mask) request to the served decoder (Triton, or
any server of the Open Inference / KServe v2 protocol) and check the decoded image that comes back."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from asymvae.commands.options import add_command, from_args
from asymvae.config import ConfigError


@dataclass
class InferOptions:
    """`asymvae infer`."""

    url: str
    """Base URL of the server, e.g. http://asymvae-decoder.team-a.svc.cluster.local or http://localhost:8080."""
    model: str = "asymvae_decoder"
    """Model name in the Triton repository (the export's `--name`), not the InferenceService's name."""
    height: int = 512
    """Image height in pixels (a multiple of 8)."""
    width: int = 512
    """Image width in pixels (a multiple of 8)."""
    batch: int = 1
    """Images in the request."""
    header: list[str] = field(default_factory=list)
    """An HTTP header NAME:VALUE, e.g. `Host:asymvae-decoder.team-a.example.com` behind an ingress;
    repeatable. A token belongs in the environment (`--token-env`), not here, where `ps` shows it."""
    token_env: str = "ASYMVAE_TOKEN"
    """The environment variable whose value, when set, is sent as `Authorization: Bearer VALUE` (to the
    URL's host only: redirects are not followed)."""
    save_request: str | None = None
    """Also write the request's JSON body to this file (for curl: `-d @FILE`)."""
    timeout: float = 120.0
    """Seconds each request may take in all (connecting, sending, waiting and reading)."""
    payload: str = "auto"
    """How tensors travel: `binary` (raw bytes after a JSON header, the v2 binary tensor extension Triton and
    KServe serve), `json` (numbers in JSON), or `auto` (binary, then JSON where the server refuses it)."""


def parse_headers(items: list[str]) -> dict[str, str]:
    """`NAME:VALUE` header arguments."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header {item!r}: expected NAME:VALUE, e.g. Host:decoder.example.com")
        out[name.strip()] = value.strip()
    return out


def token_header(env_name: str) -> dict[str, str]:
    """`Authorization: Bearer TOKEN` from environment variable `env_name`, or nothing when it is unset."""
    token = os.environ.get(env_name, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def run(args: argparse.Namespace) -> int:
    """Fetch the model's tensors, send one request, print what came back."""
    from asymvae.serving.client import check_inference, decoder_inputs, fetch_model_io, infer_request

    o = from_args(InferOptions, args)
    headers = {**token_header(o.token_env), **parse_headers(o.header)}
    io = fetch_model_io(o.url, o.model, headers, o.timeout)
    if o.save_request:
        body = infer_request(decoder_inputs(io, o.height, o.width, o.batch), io)
        Path(o.save_request).write_text(json.dumps(body))
    check = check_inference(o.url, io, o.height, o.width, o.batch, headers, o.timeout, o.payload)
    print(f"{o.url} model {check.model}: {check.seconds:.3f} s")
    for name, shape in check.input_shapes.items():
        print(f"  in  {name} {shape}")
    low, high = check.value_range
    print(f"  out sample {check.output_shape} values in [{low:.3f}, {high:.3f}]")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `infer` to the command line."""
    add_command(
        sub, "infer", InferOptions, run, description=__doc__, positional=("url",),
        help="send one request to the served decoder and check the answer",
    )  # fmt: skip
