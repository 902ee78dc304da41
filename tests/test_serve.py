"""`asymvae serve` on KServe's real Python model server (started here on a loopback port with a tiny exported
model), answered by the v2 client in binary and JSON and checked against a direct in-process decode."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

# kserve is never imported in this process: its v2 protobuf messages share their names with tritonclient.grpc's,
# which the export and the client load, and protobuf refuses a second definition in one process.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("the serve extra (pip install 'asymvae[serve]') is not installed", allow_module_level=True)

from asymvae.cli import main
from asymvae.export.config import ExportConfig
from asymvae.export.run import export_model
from asymvae.model.decode import TileConfig, decode_latents
from asymvae.model.files import load_vae
from asymvae.model.latent_space import LatentTransform
from asymvae.serving.client import ModelIO, ServingError, check_inference, decoder_inputs, fetch_model_io, infer
from asymvae.serving.payload import encode_request
from asymvae.storage.http import request
from tests.support.ports import free_port
from tests.support.serve import Served, asymvae_serve

MODEL = "asymvae_decoder"
TILE = ("--tile-above", "64", "--tile", "64", "--tile-overlap", "32")
"""Images with a side above 64 px decode in 64 px tiles here (a 96² image: 2 x 2 tiles)."""


@pytest.fixture(scope="module")
def server(diffusers_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`asymvae serve` in a subprocess on free ports, once it answers ready; its log is kept for failures."""
    with asymvae_serve(diffusers_export_dir, tmp_path_factory.mktemp("serve_log") / "server.log", *TILE) as served:
        yield served


@pytest.fixture(scope="module")
def reference(diffusers_export_dir: Path):
    """Decode in this process, as the server should: (inputs as numpy, tile or None) -> sample."""
    vae = load_vae(diffusers_export_dir)
    transform = LatentTransform.of(vae.config)

    def decode(inputs: dict[str, np.ndarray], tile: TileConfig | None = None) -> np.ndarray:
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        with torch.inference_mode():
            return decode_latents(vae, transform.to_vae(t["latent"]), t["image"], t["mask"], tile).numpy()

    return decode


def _inputs(server: str, size: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    return decoder_inputs(fetch_model_io(server, MODEL), size, size, batch, seed)


@pytest.mark.parametrize("payload", ["binary", "json"])
def test_a_request_decodes_as_the_model_does_in_process(server, reference, payload) -> None:
    io = fetch_model_io(server, MODEL)
    assert [(s.name, s.shape) for s in io.inputs] == [("latent", [-1, 4, -1, -1]), ("image", [-1, 3, -1, -1]),
                                                      ("mask", [-1, 1, -1, -1])]  # fmt: skip
    inputs = decoder_inputs(io, 48, 64, batch=2, seed=1)
    sample = infer(server, io, inputs, payload=payload)["sample"]
    assert sample.shape == (2, 3, 48, 64) and sample.dtype == np.float32
    np.testing.assert_allclose(sample, reference(inputs), atol=1e-5)


_TRITONCLIENT = """
import sys
import numpy as np
import tritonclient.{protocol} as client_module

client = client_module.InferenceServerClient(sys.argv[1])
inputs = np.load(sys.argv[2])
tensors = []
for name in ("latent", "image", "mask"):
    tensors.append(client_module.InferInput(name, list(inputs[name].shape), "FP32"))
    tensors[-1].set_data_from_numpy(inputs[name])
result = client.infer("{model}", tensors, outputs=[client_module.InferRequestedOutput("sample")])
np.save(sys.argv[3], result.as_numpy("sample"))
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_talks_to_it_over_rest_and_grpc(server, reference, protocol, tmp_path) -> None:
    """The maintained v2 client, as docs/export-and-serving.md shows it, over both of the server's protocols
    (in a process of its own: tritonclient.grpc and kserve register the same protobuf names)."""
    inputs = _inputs(server, 32, seed=3)
    np.savez(tmp_path / "inputs.npz", **inputs)
    url = server.removeprefix("http://") if protocol == "http" else server.grpc
    script = _TRITONCLIENT.format(protocol=protocol, model=MODEL)
    argv = [sys.executable, "-c", script, url, str(tmp_path / "inputs.npz"), str(tmp_path / "sample.npy")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "sample.npy"), reference(inputs), atol=1e-5)


def test_it_serves_what_the_triton_export_declares_and_passes_the_deploy_check(
    server, asym_export_dir: Path, tmp_path: Path
) -> None:
    """Same tensors as the Triton model of the same training export, so one client and one deploy check
    (`check_inference` on the export's config.pbtxt, as asymvae.steps.deploy runs it) serve both."""
    export_model(ExportConfig(str(asym_export_dir), "triton", str(tmp_path / "repo"), name=MODEL))
    declared = ModelIO.from_triton_config(tmp_path / "repo" / MODEL)
    served = fetch_model_io(server, MODEL)
    assert (served.inputs, served.outputs) == (declared.inputs, declared.outputs)
    check = check_inference(server, declared, 40, 24, batch=declared.max_batch_size)
    assert check.output_shape == [declared.max_batch_size, 3, 40, 24]


def test_binary_requests_get_binary_answers_a_quarter_the_size_of_json(server) -> None:
    inputs = _inputs(server, 64)
    datatypes = dict.fromkeys(inputs, "FP32")
    url = f"{server}/v2/models/{MODEL}/infer"
    sizes = {}
    for binary in (True, False):
        body, headers = encode_request(inputs, datatypes, ("sample",), binary)
        answer = request("POST", url, body, headers, 60.0)
        assert answer.status == 200
        assert ("inference-header-content-length" in answer.headers) == binary
        sizes[binary] = len(body) + len(answer.body)
    raw = sum(a.nbytes for a in inputs.values()) + 4 * 3 * 64 * 64
    assert raw < sizes[True] < raw + 2000 and sizes[False] > 3 * sizes[True]


def test_a_large_image_is_decoded_in_tiles(server, reference) -> None:
    inputs = _inputs(server, 96, seed=2)  # above --tile-above 64
    sample = infer(server, fetch_model_io(server, MODEL), inputs)["sample"]
    tiled = reference(inputs, TileConfig(size=64, overlap=32))
    np.testing.assert_allclose(sample, tiled, atol=1e-5)
    assert np.abs(sample - reference(inputs)).max() > 1e-3  # not the whole-image decode


def _metric(server: str, name: str) -> float:
    text = request("GET", f"{server}/metrics", None, {}, 10.0).body.decode()
    values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M)
    return sum(float(v) for v in values)


def test_concurrent_requests_are_batched_and_each_gets_its_own_image(server, reference) -> None:
    io = fetch_model_io(server, MODEL)
    requests = [decoder_inputs(io, 32, 32, batch=1, seed=10 + i) for i in range(8)]
    decodes = _metric(server, "asymvae_decode_batch_requests_count")
    served = _metric(server, "asymvae_decode_batch_requests_sum")
    with ThreadPoolExecutor(8) as pool:
        samples = list(pool.map(lambda inputs: infer(server, io, inputs, timeout_s=120.0)["sample"], requests))
    for inputs, sample in zip(requests, samples, strict=True):
        np.testing.assert_allclose(sample, reference(inputs), atol=1e-5)
    assert _metric(server, "asymvae_decode_batch_requests_sum") - served == 8
    assert _metric(server, "asymvae_decode_batch_requests_count") - decodes < 8  # some were decoded together
    assert _metric(server, "request_predict_seconds_count") >= 8  # KServe's own latency histogram


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--model", "no_such_model"], "HTTP 404"),
        (["--height", "12"], "multiples of 8"),
        (["--timeout", "0.000001"], "no complete answer within"),
    ],
)
def test_the_infer_command_succeeds_or_fails_in_one_line(server, capsys, argv, said) -> None:
    with pytest.raises(SystemExit) as done:
        main(["infer", server, "--height", "32", "--width", "32"])
    assert done.value.code == 0 and "sample [1, 3, 32, 32]" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["infer", server, "--height", "32", "--width", "32", *argv])
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and err.count("\n") == 1, err


def test_requests_the_model_cannot_decode_are_refused_with_the_reason(server) -> None:
    io = fetch_model_io(server, MODEL)
    inputs = decoder_inputs(io, 32, 32)
    inputs["mask"] = inputs["mask"][..., :16, :]
    with pytest.raises(ServingError, match=r"HTTP 400.*'mask' has shape \[1, 1, 16, 32\].*needs \[1, 1, 32, 32\]"):
        infer(server, io, inputs)
    empty = decoder_inputs(io, 32, 32)
    empty = {k: v[..., :0, :0] for k, v in empty.items()}  # passes the shape checks; the decoder cannot run it
    with pytest.raises(ServingError, match=r"HTTP 5\d\d"):
        infer(server, io, empty, payload="binary")


_READINESS = """
import asyncio
import sys
from asymvae.serving.config import ServeConfig
from asymvae.serving.predictor import DecoderPredictor

predictor = DecoderPredictor(ServeConfig(sys.argv[1], device="cpu"))
before = (predictor.ready, asyncio.run(predictor.healthy()))
predictor.load()
print(before, (predictor.ready, asyncio.run(predictor.healthy())))
"""


def test_the_model_is_ready_only_once_loaded(diffusers_export_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _READINESS, str(diffusers_export_dir)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(False, False) (True, True)"


@pytest.mark.parametrize(
    ("model", "argv", "said"),
    [
        ("exported", ["--tile", "36", "--tile-overlap", "8"], r"--tile 36 --tile-overlap 8: tile size 36 is not a mul"),
        pytest.param("exported", ["--device", "cuda"], r"--device cuda: no GPU is visible",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")),
        ("missing", [], r"missing does not exist"),
    ],
)  # fmt: skip
def test_what_only_the_model_or_the_machine_can_refuse_is_one_line(
    diffusers_export_dir, tmp_path, model, argv, said
) -> None:
    """In a process of its own (the check comes after kserve is imported); serving instead would time out."""
    folder = diffusers_export_dir if model == "exported" else tmp_path / model
    argv = [sys.executable, "-m", "asymvae", "serve", str(folder), *argv, "--http-port", str(free_port()),
            "--grpc-port", "0"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    lines = [x for x in done.stderr.splitlines() if x.startswith("asymvae serve: error:")]
    assert done.returncode == 2 and len(lines) == 1 and re.search(said, lines[0]), done.stderr[-2000:]


def test_serve_options_are_checked_before_anything_loads(tmp_path: Path, capsys) -> None:
    """(In this process: these fail before kserve is imported.)"""
    for argv, said in (
        (["--tile", "32", "--tile-overlap", "32"], "--tile 32 --tile-overlap 32"),
        (["--name", "a/b"], "model name 'a/b'"),
    ):
        with pytest.raises(SystemExit) as done:
            main(["serve", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert done.value.code == 2 and said in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as done:  # a choice: argparse lists the choices beside the usage
        main(["serve", str(tmp_path), "--device", "tpu"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "'tpu' is not one of auto, cpu, cuda" in err, err


@pytest.fixture(scope="module")
def photo_request(diffusers_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real photo (scikit-image's astronaut, 64x48 px) as a JPEG, its mask as a PNG (a box: 255 = hole) and
    its latent, encoded in this process by the tiny model and scaled as a diffusion model hands it over, as
    .npy and .safetensors."""
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image
    from safetensors.numpy import save_file
    from skimage.data import astronaut

    root = tmp_path_factory.mktemp("photo")
    photo = Image.fromarray(astronaut()).resize((64, 48), Image.Resampling.LANCZOS)
    photo.save(root / "photo.jpg", quality=95)
    hole = np.zeros((48, 64), np.uint8)
    hole[8:32, 16:56] = 255
    Image.fromarray(hole).save(root / "mask.png")
    vae = load_vae(diffusers_export_dir)
    pixels = VaeImageProcessor().preprocess(Image.open(root / "photo.jpg"))  # [-1, 1], as pipelines encode
    with torch.inference_mode():
        latent = LatentTransform.of(vae.config).from_vae(vae.encode(pixels).latent_dist.mode()).contiguous().numpy()
    np.save(root / "latent.npy", latent)
    save_file({"latent": latent[0]}, str(root / "latent.safetensors"))  # (C, h, w): without the batch axis
    return {"image": root / "photo.jpg", "mask": root / "mask.png", "latent": root / "latent.npy",
            "safetensors": root / "latent.safetensors"}  # fmt: skip


def _decode_files(server: str, files: dict[str, Path], to: Path, **changed: Path | str) -> list[str]:
    paths = {"image": files["image"], "mask": files["mask"], "latent": files["latent"], "output": to, **changed}
    return ["infer", server, *(x for name, path in paths.items() for x in (f"--{name}", str(path)))]


@pytest.mark.parametrize("latent", ["latent", "safetensors"])
def test_the_infer_command_decodes_image_mask_and_latent_files_to_the_png_of_an_in_process_decode(
    server, reference, photo_request, latent, tmp_path, capsys
) -> None:
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    output = tmp_path / "decoded.png"
    with pytest.raises(SystemExit) as done:
        main(_decode_files(server, photo_request, output, latent=photo_request[latent]))
    assert done.value.code == 0 and f"wrote {output} (64x48 px)" in capsys.readouterr().out
    inputs = {
        "latent": np.load(photo_request["latent"]),
        "image": np.asarray(Image.open(photo_request["image"]), np.float32).transpose(2, 0, 1)[None] / 127.5 - 1,
        "mask": (np.asarray(Image.open(photo_request["mask"])) >= 128).astype(np.float32)[None, None],
    }
    expected = VaeImageProcessor().postprocess(torch.from_numpy(reference(inputs)), output_type="np")[0]
    with Image.open(output) as png:
        written = np.asarray(png)
        assert png.mode == "RGB" and png.text["Software"] == "asymvae infer"
    assert written.shape == (48, 64, 3)
    assert np.abs(written.astype(int) - (expected * 255).round().astype(int)).max() <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["decoded.png"]  # no temporary file left behind


def test_the_infer_command_replaces_only_its_own_png(server, photo_request, tmp_path, capsys) -> None:
    output = tmp_path / "decoded.png"
    for _ in range(2):  # the second run replaces the PNG the first one wrote
        with pytest.raises(SystemExit) as done:
            main(_decode_files(server, photo_request, output))
        assert done.value.code == 0, capsys.readouterr().err
    theirs = tmp_path / "theirs.png"
    theirs.write_bytes(photo_request["mask"].read_bytes())  # a PNG asymvae infer did not write
    with pytest.raises(SystemExit) as done:
        main(_decode_files(server, photo_request, theirs))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1, err
    assert f"{theirs} exists and was not written by asymvae infer" in err and "choose another --output" in err
    assert theirs.read_bytes() == photo_request["mask"].read_bytes()


def _bad_inputs(root: Path, files: dict[str, Path]) -> dict[str, dict[str, Path | str]]:
    """Each mistake a user can make with the files: the options to change and the file they point to."""
    from PIL import Image

    latent = np.load(files["latent"])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.new("L", (32, 48)).save(root / "narrow_mask.png")
    np.save(root / "small.npy", latent[..., :4, :])
    np.save(root / "channels.npy", np.concatenate([latent, latent], axis=1))
    np.save(root / "two.npy", np.concatenate([latent, latent]))
    nan = latent.copy()
    nan[0, 0, 0, :3] = np.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "pickled.npy", np.array([{"latent": latent}], dtype=object), allow_pickle=True)
    np.save(root / "ints.npy", latent.astype(np.int64))
    (root / "latent.pt").write_bytes(b"")
    return {
        "missing image": {"image": root / "absent.jpg"},
        "corrupt image": {"image": root / "corrupt.png"},
        "mask of another size": {"mask": root / "narrow_mask.png"},
        "latent of another size": {"latent": root / "small.npy"},
        "latent of other channels": {"latent": root / "channels.npy"},
        "two latents": {"latent": root / "two.npy"},
        "NaN in the latent": {"latent": root / "nan.npy"},
        "pickled latent": {"latent": root / "pickled.npy"},
        "integer latent": {"latent": root / "ints.npy"},
        "latent not npy": {"latent": root / "latent.pt"},
        "output not png": {"output": root / "decoded.jpg"},
    }


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("missing image", r"--image \S+absent.jpg: no such file"),
        ("corrupt image", r"--image \S+corrupt.png: not a readable image"),
        ("mask of another size", r"--image \S+ is 64x48 px but --mask \S+narrow_mask.png is 32x48 px"),
        ("latent of another size", r"--latent \S+small.npy is 8x4, the latent of a 64x32 px image, but --image"),
        ("latent of other channels", r"--latent \S+channels.npy: 8 channels, but model 'asymvae_decoder' decodes"),
        ("two latents", r"--latent \S+two.npy: shape \[2, 4, 6, 8\], expected one latent"),
        ("NaN in the latent", r"--latent \S+nan.npy: 3 of 192 values are NaN or infinite"),
        ("pickled latent", r"--latent \S+pickled.npy: not a NumPy .npy array \(Object arrays cannot be loaded"),
        ("integer latent", r"--latent \S+ints.npy: holds int64 values"),
        ("latent not npy", r"--latent \S+latent.pt: expected a .npy or .safetensors file"),
        ("output not png", r"--output \S+decoded.jpg: the decoded image is written as PNG"),
    ],
)
def test_files_the_infer_command_cannot_decode_are_refused_in_one_line(
    server, photo_request, tmp_path, capsys, case, said
) -> None:
    bad = _bad_inputs(tmp_path, photo_request)[case]
    with pytest.raises(SystemExit) as done:
        main(_decode_files(server, photo_request, tmp_path / "decoded.png", **bad))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and re.search(said, err), err
    assert not (tmp_path / "decoded.png").exists()


def test_the_file_options_go_together(server, photo_request, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["infer", server, "--image", str(photo_request["image"]), "--latent", str(photo_request["latent"])])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1, err
    assert "--image, --latent without --mask, --output: --image, --mask, --latent and --output go together" in err
