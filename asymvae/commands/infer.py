"""`asymvae infer URL --model NAME`: send one (latent, image, mask) request to the served decoder (Triton, or
any server of the Open Inference / KServe v2 protocol) and check the decoded image that comes back; with
`--image --mask --latent --output`, decode those files and write the image as a PNG."""

from __future__ import annotations

import argparse
import json
import os
import time
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
    image: str | None = None
    """The image the diffusion model inpainted (a file Pillow reads; RGB): with --mask, --latent and --output,
    decode these files instead of made-up inputs (--height, --width and --batch then come from the files)."""
    mask: str | None = None
    """Its mask, a file of the image's size read as grey: light (>= 128) = the hole the diffusion model
    generated, dark = kept (diffusers' convention)."""
    latent: str | None = None
    """The latent the diffusion model hands the decoder, scaled as a diffusers pipeline returns it with
    `output_type="latent"`: a .npy (np.save) or .safetensors file of shape (1, C, H/8, W/8) or (C, H/8, W/8)."""
    output: str | None = None
    """The decoded image's PNG, written atomically; an existing file is replaced only if asymvae infer wrote it
    (its PNG text Software: asymvae infer)."""


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


FILE_OPTIONS = ("image", "mask", "latent", "output")


def decodes_files(o: InferOptions) -> bool:
    """Whether `o` asks to decode files (all of FILE_OPTIONS given) or to check (none); ConfigError for some."""
    given = [name for name in FILE_OPTIONS if getattr(o, name)]
    if given and len(given) < len(FILE_OPTIONS):
        missing = ", ".join(f"--{name}" for name in FILE_OPTIONS if name not in given)
        raise ConfigError(
            f"{', '.join(f'--{name}' for name in given)} without {missing}: --image, --mask, --latent and "
            "--output go together (or give none of them to check the server with made-up inputs)"
        )
    return bool(given)


def decode_files(o: InferOptions, headers: dict[str, str]) -> int:
    """Decode --latent against --image and --mask on the server and write --output."""
    from asymvae.serving.client import decode, fetch_model_io, infer_request
    from asymvae.serving.files import check_output, read_files, save_png

    output = check_output(o.output)
    files = read_files(o.image, o.mask, o.latent)
    io = fetch_model_io(o.url, o.model, headers, o.timeout)
    inputs = files.inputs(io)
    if o.save_request:
        Path(o.save_request).write_text(json.dumps(infer_request(inputs, io)))
    start = time.perf_counter()
    sample = decode(o.url, io, inputs, headers, o.timeout, o.payload)
    seconds = time.perf_counter() - start
    save_png(sample[0], output)
    print(f"{o.url} model {io.model}: {seconds:.3f} s")
    print(f"  wrote {output} ({sample.shape[3]}x{sample.shape[2]} px)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Fetch the model's tensors, send one request, print what came back (or write the decoded file)."""
    from asymvae.serving.client import check_inference, decoder_inputs, fetch_model_io, infer_request

    o = from_args(InferOptions, args)
    headers = {**token_header(o.token_env), **parse_headers(o.header)}
    if decodes_files(o):
        return decode_files(o, headers)
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
        help="send one request to the served decoder and check the answer, or decode files to a PNG",
    )  # fmt: skip
