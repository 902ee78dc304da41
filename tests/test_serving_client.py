"""The v2 inference client against a real Triton Inference Server (tests/support/tritonserver.py: the
tritonserver binary of the nvidia-pytriton wheel serving the Triton export, each request run by onnxruntime in
its Python backend), and the client code the docs show (tritonclient, curl) run as written against it. Small
loopback stand-ins give what no real server does on request: redirects, a byte-at-a-time answer, a server
without the binary extension, malformed answers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from asymvae.cli import main
from asymvae.export.config import ExportConfig
from asymvae.export.run import export_model
from asymvae.serving.client import (
    ModelIO,
    ServerExited,
    ServingError,
    TensorSpec,
    check_inference,
    decoder_inputs,
    fetch_model_io,
    infer,
    wait_ready,
)
from tests.support.ports import free_port
from tests.support.tritonserver import TritonServer

MODEL = "asymvae_decoder"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "export-and-serving.md"


@pytest.fixture(scope="module")
def repository(asym_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "repo"
    export_model(ExportConfig(str(asym_export_dir), "triton", str(root), name=MODEL))
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """Triton serving the export, once it answers ready."""
    with TritonServer(repository, tmp_path_factory.mktemp("tritonserver")) as url:
        yield url


def test_one_request_decodes_and_matches_onnxruntime_run_directly(server, repository: Path) -> None:
    io = ModelIO.from_triton_config(repository / MODEL)
    check = check_inference(server, io, height=64, width=64)
    assert check.output_shape == [1, 3, 64, 64]
    assert check.input_shapes == {"latent": [1, 4, 8, 8], "image": [1, 3, 64, 64], "mask": [1, 1, 64, 64]}
    # neither payload loses anything: the served answer is the model's
    inputs = decoder_inputs(io, 64, 64)
    session = ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (direct,) = session.run(["sample"], inputs)
    for payload in ("binary", "json"):
        np.testing.assert_array_equal(infer(server, io, inputs, payload=payload)["sample"], direct)


@pytest.mark.parametrize("height, width, batch", [(32, 32, 1), (48, 80, 2), (96, 64, 8)])
def test_the_served_config_accepts_the_decoders_resolutions_and_batches(server, repository, height, width, batch):
    """Triton's config leaves height, width and batch free (up to max_batch_size): any multiple of 8 works."""
    io = ModelIO.from_triton_config(repository / MODEL)
    assert io.input("image").shape == [-1, 3, -1, -1] and io.input("latent").shape == [-1, 4, -1, -1]
    check = check_inference(server, io, height=height, width=width, batch=batch)
    assert check.output_shape == [batch, 3, height, width]


def test_requests_the_config_refuses_are_refused(server, repository: Path) -> None:
    io = ModelIO.from_triton_config(repository / MODEL)
    with pytest.raises(ServingError, match="max_batch_size 8"):
        decoder_inputs(io, 32, 32, batch=9)
    with pytest.raises(ServingError, match="multiples of 8"):
        decoder_inputs(io, 30, 32)
    latent = np.full((1, 4, 4, 4), 0.5)  # a caller's own latent (e.g. the UNet's), cast to the model's FP32
    assert decoder_inputs(io, 32, 32, latent=latent)["latent"].dtype == np.float32
    with pytest.raises(ServingError, match=r"input 'latent' of shape \[1, 8, 4, 4\] does not fit"):
        decoder_inputs(io, 32, 32, latent=np.zeros((1, 8, 4, 4)))
    # what Triton itself refuses: a datatype or a batch the config does not declare
    as_fp64 = ModelIO(io.model, [TensorSpec(s.name, "FP64", s.shape) for s in io.inputs], io.outputs)
    wrong = {k: v.astype(np.float64) for k, v in decoder_inputs(io, 32, 32).items()}
    with pytest.raises(
        ServingError, match=r"HTTP 400.*data-type is 'FP64', but model 'asymvae_decoder' expects 'FP32'"
    ):
        infer(server, as_fp64, wrong)
    unchecked = ModelIO(io.model, io.inputs, io.outputs)  # no max_batch_size: the client lets batch 9 through
    with pytest.raises(ServingError, match="HTTP 400.*batch-size must be <= 8"):
        infer(server, unchecked, decoder_inputs(unchecked, 32, 32, batch=9))
    with pytest.raises(ServingError, match="HTTP 404.*unknown model"):
        check_inference(server, ModelIO("asymvae-decoder", io.inputs, io.outputs, 8))  # the ISVC name is wrong


def test_metadata_from_the_server_equals_the_exported_config(server, repository: Path) -> None:
    assert fetch_model_io(server, MODEL) == ModelIO(
        MODEL,
        ModelIO.from_triton_config(repository / MODEL).inputs,
        ModelIO.from_triton_config(repository / MODEL).outputs,
    )


def test_the_infer_command_checks_a_served_model(server, tmp_path: Path, capsys) -> None:
    request = tmp_path / "request.json"
    with pytest.raises(SystemExit) as done:
        main(["infer", server, "--model", MODEL, "--height", "32", "--width", "48",
              "--save-request", str(request)])  # fmt: skip
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "sample [1, 3, 32, 48]" in out and request.is_file()
    with pytest.raises(SystemExit) as done:
        main(["infer", server, "--model", "no_such_model"])
    assert done.value.code == 2 and "unknown model" in capsys.readouterr().err


def _doc_block(lang: str, marker: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", DOCS.read_text(), flags=re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def test_the_docs_tritonclient_example_runs_as_written(server) -> None:
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] (a dev dependency) is not installed")
    code = _doc_block("python", "tritonclient.http").replace("localhost:8080", server.removeprefix("http://"))
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)  # the documented example, run as a user would
    assert scope["sample"].shape == (1, 3, 512, 512)


@pytest.mark.integration  # a subprocess against a server
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_docs_curl_example_runs_as_written(server, tmp_path: Path) -> None:
    script = _doc_block("bash", "curl").replace("http://localhost:8080", server)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `asymvae`
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"inputs":[{"name":"latent"' in done.stdout.replace(" ", "")  # the metadata request
    assert done.stdout.endswith("sample [1, 3, 64, 64]\n")  # the inference request's answer
    assert json.loads((tmp_path / "request.json").read_text())["inputs"][0]["name"] == "latent"


class _Recorder(BaseHTTPRequestHandler):
    """Records each request's path and Authorization header; answers as the server's `answer` says."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        self.server.answer(self)

    do_POST = do_GET  # the answer reads the body

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _http_server(answer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads, server.seen, server.answer = True, [], answer
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _json(handler: BaseHTTPRequestHandler, payload: dict) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_the_token_comes_from_the_environment_and_never_follows_a_redirect(monkeypatch, capsys) -> None:
    with _http_server(lambda h: _json(h, {"name": MODEL, "inputs": [], "outputs": []})) as (elsewhere, other):

        def redirect(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(307)
            handler.send_header("Location", f"{other}{handler.path}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with _http_server(redirect) as (first, base):
            monkeypatch.setenv("ASYMVAE_TOKEN", "s3cret")
            with pytest.raises(SystemExit) as done:
                main(["infer", base, "--model", MODEL, "--timeout", "30"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert f"a redirect to {other}/v2/models/{MODEL}, which is not followed" in err and "s3cret" not in err
    assert first.seen == [(f"/v2/models/{MODEL}", "Bearer s3cret")], "the token from ASYMVAE_TOKEN was not sent"
    assert elsewhere.seen == [], "the request followed the redirect to another server"


@pytest.mark.integration  # a loopback server, waited on until the deadline
def test_a_server_that_answers_a_byte_at_a_time_cannot_outlast_the_deadline(capsys) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:  # 200 bytes, one every 50 ms: 10 s in all
        handler.send_response(200)
        handler.send_header("Content-Length", "200")
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(200):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.05)

    with _http_server(drip) as (_, base), pytest.raises(SystemExit) as done:
        main(["infer", base, "--model", MODEL, "--timeout", "1"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert f"GET {base}/v2/models/{MODEL}: no complete answer within 1 s" in err


def _answer(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {**(headers or {}), "Content-Length": str(len(data))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


_METADATA = {"name": MODEL, "inputs": [{"name": "latent", "datatype": "FP32", "shape": [-1, 4, -1, -1]},
                                       {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]},
                                       {"name": "mask", "datatype": "FP32", "shape": [-1, 1, -1, -1]}],
             "outputs": [{"name": "sample", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]}  # fmt: skip


def _json_only(handler: BaseHTTPRequestHandler) -> None:
    """A v2 server without the binary tensor extension, which the Open Inference Protocol leaves optional
    (kserve/open-inference-protocol specification/protocol/inference_rest.md requires JSON only; the
    extension is triton-inference-server/server docs/protocol/extension_binary_data.md): a binary body is
    not JSON to it (400). Its model answers `sample` = `image`."""
    if handler.command == "GET":
        return _json(handler, _METADATA)
    body = handler.rfile.read(int(handler.headers["Content-Length"]))
    try:
        request = json.loads(body)
    except ValueError:
        return _answer(handler, 400, b'{"error": "Unrecognized request format"}')
    image = next(t for t in request["inputs"] if t["name"] == "image")
    output = {"name": "sample", "datatype": "FP32", "shape": image["shape"], "data": image["data"]}
    _answer(handler, 200, json.dumps({"model_name": MODEL, "outputs": [output]}).encode())


def test_a_server_without_the_binary_extension_is_answered_in_json() -> None:
    with _http_server(_json_only) as (server, base):
        io = fetch_model_io(base, MODEL)
        inputs = decoder_inputs(io, 16, 24, batch=2)
        sample = infer(base, io, inputs)["sample"]
        np.testing.assert_array_equal(sample, inputs["image"])
        assert len(server.seen) == 3  # metadata, the binary request (refused), the same request in JSON
        with pytest.raises(ServingError, match="answered HTTP 400"):
            infer(base, io, inputs, payload="binary")


def _header(outputs: list[dict]) -> bytes:
    return json.dumps({"model_name": MODEL, "outputs": outputs}).encode()


_SHORT = _header([{"name": "sample", "datatype": "FP32", "shape": [1, 3, 32, 32],
                   "parameters": {"binary_data_size": 12288}}])  # fmt: skip


@pytest.mark.parametrize(
    ("status", "data", "headers", "said"),
    [
        (503, b"no healthy upstream", {}, "answered HTTP 503: no healthy upstream"),
        (404, b'{"error": "Model with name x does not exist."}', {}, "answered HTTP 404"),
        (200, b"<html>ok</html>", {}, "answered not a v2 inference answer"),
        (200, _SHORT + b"0123", {"Inference-Header-Content-Length": str(len(_SHORT))}, "not a v2 inference answer"),
        (200, _header([{"name": "sample", "shape": [1, 3, 32, 32]}]), {}, "not a v2 inference answer"),
    ],
)
def test_failed_and_malformed_answers_end_in_one_line(capsys, status, data, headers, said) -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "GET":
            return _json(handler, _METADATA)
        handler.rfile.read(int(handler.headers["Content-Length"]))
        _answer(handler, status, data, headers)

    with _http_server(answer) as (_, base), pytest.raises(SystemExit) as done:
        main(["infer", base, "--height", "32", "--width", "32", "--payload", "binary"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and err.count("\n") == 1, err


def test_waiting_for_a_server_ends_when_its_process_ends_or_time_runs_out() -> None:
    """What the test fixtures and the serving benchmark wait with: a server that died is reported at once, with
    its exit status, not after the whole wait; a port nobody answers on, after the given time."""
    nobody = f"http://127.0.0.1:{free_port()}"
    died = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    died.wait()
    with pytest.raises(ServerExited, match=f"the server for {nobody} exited with 3 before it was ready"):
        wait_ready(nobody, 600.0, died)  # a wait that ignored the process would end in "not ready after 600 s"
    with pytest.raises(ServingError, match=rf"{nobody} was not ready after 0.3 s \(GET /v2/health/ready\)"):
        wait_ready(nobody, 0.3, poll_s=0.05)


def test_the_client_and_its_file_reading_load_neither_torch_nor_diffusers() -> None:
    """`asymvae infer` (with or without files) is a network client: the modules it runs load none of the model
    stack, which takes seconds to import (it did: reading the files went through asymvae.inpaint.request, which
    imported asymvae.model.decode for an annotation)."""
    code = (
        "import json, sys\n"
        "import asymvae.commands.infer, asymvae.serving.client, asymvae.serving.files\n"
        "print(json.dumps(sorted(m.partition('.')[0] for m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & {"torch", "diffusers", "accelerate", "datasets", "transformers"}, sorted(loaded)
