"""End to end through the CLI: torchrun with 2 processes, a killed run resumed, bad data, the launcher."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL

from asymvae.config import save_yaml
from asymvae.training.checkpoint import MARKER, complete_checkpoints
from asymvae.training.launch import torchrun_command
from asymvae.training.run import train
from tests.support.tiny_models import tiny_config

pytestmark = pytest.mark.integration  # whole runs through the CLI and the pipeline

ROOT = Path(__file__).resolve().parents[1]


def asymvae(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "asymvae", *args], capture_output=True, text=True, cwd=ROOT, env=full_env, **kw
    )


def train_on_two_ranks(cfg, cfg_file: Path) -> tuple[subprocess.CompletedProcess, dict[int, dict[int, list[int]]]]:
    """Run `cfg` under torchrun with 2 processes; return the run and the image indices each rank saw per step."""
    save_yaml(cfg, cfg_file)
    run = asymvae("train", str(cfg_file), env={"NPROC_PER_NODE": "2", "ASYMVAE_LOG_LEVEL": "DEBUG"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    seen: dict[int, dict[int, list[int]]] = {0: {}, 1: {}}
    for rank, step, images in re.findall(r"rank (\d) step (\d+) images \[([\d, ]+)\]", run.stderr):
        seen[int(rank)][int(step)] = [int(i) for i in images.split(",")]
    return run, seen


def test_launcher_uses_torchrun_for_several_processes_and_pet_variables():
    assert torchrun_command(["train", "demo"], {}) is None
    assert torchrun_command(["train", "demo"], {"NPROC_PER_NODE": "1"}) is None
    cmd = torchrun_command(["train", "demo"], {"NPROC_PER_NODE": "4"})
    expected = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "asymvae"]
    assert cmd[1:] == [*expected, "train", "demo"]
    # A PyTorchJob: torchrun reads PET_NNODES/PET_NODE_RANK/PET_MASTER_ADDR itself; no --standalone.
    pet = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "job-master-0"}
    cmd = torchrun_command(["train", "x"], pet)
    assert "--standalone" not in cmd and cmd[1:3] == ["-m", "torch.distributed.run"]
    # Inside a torchrun worker: never launch again.
    assert torchrun_command(["train", "x"], {**pet, "LOCAL_RANK": "0"}) is None


def test_two_processes_under_torchrun_split_data_agree_and_export_once(base_vae_dir, tmp_path):
    out = tmp_path / "ddp"
    cfg = tiny_config(base_vae_dir, out, "loss.gan.weight=0.8", "loss.gan.start_step=2")
    run, seen = train_on_two_ranks(cfg, tmp_path / "ddp.yaml")
    assert sorted(seen[0]) == sorted(seen[1]) == [0, 1, 2, 3]
    for step in range(4):
        assert not set(seen[0][step]) & set(seen[1][step]), f"ranks shared images at step {step}"
    assert len(re.findall(r"weights identical on all 2 ranks", run.stderr)) == 2
    assert [p.name for p in out.glob("step*")] == ["step4"]
    assert run.stdout.count("Exported:") == 1
    AsymmetricAutoencoderKL.from_pretrained(out / "step4", subfolder="vae")


def test_a_killed_run_resumes_to_the_uninterrupted_result(base_vae_dir, tmp_path):
    extra = ("train.max_steps=40", "train.checkpoint_every=5", "train.log_every=5")
    straight = tmp_path / "straight"
    train(tiny_config(base_vae_dir, straight, *extra))

    out = tmp_path / "killed"
    cfg_file = tmp_path / "killed.yaml"
    save_yaml(tiny_config(base_vae_dir, out, *extra), cfg_file)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asymvae", "train", str(cfg_file)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = out / "checkpoints" / "step-00000005" / MARKER
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()[-2000:]
    assert not (out / "step40").exists(), "the run finished before it could be killed"
    killed_at = complete_checkpoints(out)[-1].name

    run = asymvae("train", str(cfg_file), "--resume", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resumed from {out / 'checkpoints' / killed_at}" in run.stderr
    expected = AsymmetricAutoencoderKL.from_pretrained(straight / "step40", subfolder="vae").state_dict()
    got = AsymmetricAutoencoderKL.from_pretrained(out / "step40", subfolder="vae").state_dict()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_bad_images_beyond_the_allowed_share_stop_the_run_with_names(base_vae_dir, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (48, 48), (40 * i, 100, 200)).save(images / f"ok{i}.png")
    (images / "empty.png").write_bytes(b"")
    (images / "notes.jpg").write_text("not a picture")
    Image.new("RGB", (8, 8)).save(images / "tiny.png")
    cfg_file = tmp_path / "bad.yaml"
    save_yaml(tiny_config(base_vae_dir, tmp_path / "out", f"data.source={images}", "data.max_samples=null"), cfg_file)
    run = asymvae("train", str(cfg_file), timeout=300)
    assert run.returncode == 2
    for name in ("empty.png", "notes.jpg", "tiny.png", "max_bad_share"):
        assert name in run.stderr
    assert "Traceback" not in run.stderr
    ok = asymvae("train", str(cfg_file), "--data.max-bad-share=0.5", timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "tiny.png" in ok.stderr  # still reported, by name


def _train_preset(folder: Path, preset: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """`asymvae train PRESET` in `folder` as its own process, with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "asymvae", "train", preset, "--train.progress=false"],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, **env},
        timeout=timeout,
    )


def evaluate_and_export_the_demo(cwd: Path, env: dict[str, str], model: str, base: str) -> None:
    """The paper's headline claim in miniature, on held-out crops: preserved pixels stay far closer to the input
    with the asymmetric decoder, and plain (full-mask) decoding is not worse. Then the README's export.

    (The SD demo itself runs in CI as `make demo`, the README's command, which prints the same comparison.)"""
    import json

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "asymvae", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, **env},
            timeout=900,
        )

    data = "builtin:demo?seed=1&count=32"  # other crops than training's (seed 0) of the same photos
    run = cli(
        "eval",
        model,
        "--data",
        data,
        "--baseline",
        base,
        "--resolution",
        "64",
        "--out",
        "eval",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    s = json.loads((cwd / "eval" / "metrics.json").read_text())["summary"]
    print(f"demo eval: pre_error ratio {s['pre_error_ratio']:.3f}; full-mask PSNR", s["full_mask"])
    assert s["images"] == 32 and s["shared_encoder"] is True
    assert s["pre_error_ratio"] < 0.5
    assert s["masked"]["asymmetric"]["psnr_preserved"] > s["masked"]["baseline"]["psnr_preserved"] + 3
    assert s["full_mask"]["asymmetric"]["psnr"] > s["full_mask"]["baseline"]["psnr"] - 0.5
    run = cli("export", model, "--format", "triton", "--out", "repo", "--eval", "eval/metrics.json")
    assert run.returncode == 0, run.stderr[-3000:]
    from asymvae.export.triton import validate_triton_model

    assert validate_triton_model(cwd / "repo" / "asymvae_decoder")["inputs"] == ["latent", "image", "mask"]
    assert "pre_error ratio" in (cwd / "repo" / "asymvae_decoder" / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two trainings, eval, export and a pipeline run on a busy 2-core machine
def test_a_flux_shaped_family_end_to_end(tmp_path):
    """One family beyond SD, end to end as a user runs it: the FLUX-shaped demo (16 latent channels, no quant
    convs, a shift factor; SD3's shape takes the same code path) trains, beats its base on held-out crops, exports,
    and inpaints through FluxInpaintPipeline keeping the unmasked pixels (the pipeline alone decodes blind)."""
    import numpy as np
    from diffusers import FluxInpaintPipeline, FluxPipeline
    from PIL import Image

    from asymvae.data.demo_images import demo_image
    from asymvae.masks import eval_mask_config, make_mask
    from tests.support.tiny_pipelines import flux_pipeline

    env = {"HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch_home")}
    run = _train_preset(tmp_path, "demo_flux", env, timeout=2700)
    assert run.returncode == 0, run.stderr[-3000:]
    model = tmp_path / "work_dirs" / "demo_flux" / "step400"
    evaluate_and_export_the_demo(tmp_path, env, str(model), "work_dirs/demo_base_flux/step600")

    vae = AsymmetricAutoencoderKL.from_pretrained(model, subfolder="vae").eval()
    assert (vae.config.latent_channels, vae.config.shift_factor, vae.config.force_upcast) == (16, 0.1159, True)
    (tmp_path / "parts").mkdir()
    flux_pipeline(vae, tmp_path / "parts", FluxPipeline).save_pretrained(tmp_path / "flux")
    image, _ = demo_image(0, 64, seed=1)  # a held-out crop
    hole = make_mask(eval_mask_config(), 64, 64, 7, 0)
    mask = Image.fromarray((hole * 255).astype(np.uint8))
    image.save(tmp_path / "in.png")
    mask.save(tmp_path / "mask.png")
    args = ["--vae", str(model), "--pipeline", str(tmp_path / "flux"), "--image", str(tmp_path / "in.png")]
    args += ["--mask", str(tmp_path / "mask.png"), "--prompt", "a photo of a cat", "--prompt", "a dog"]
    args += ["--num-images-per-prompt", "2", "--steps", "3", "--seed", "5"]
    for name, extra in (("whole", []), ("tiled", ["--tile", "32", "--tile-overlap", "16"])):
        run = subprocess.run(
            [sys.executable, "-m", "asymvae", "inpaint", *args, "--out", str(tmp_path / name), *extra],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    # The same pipeline run by itself (same seed), decoding the same latents blind with the same VAE.
    pipe = FluxInpaintPipeline.from_pretrained(tmp_path / "flux", vae=vae)
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(
        ["a photo of a cat", "a dog"],
        image=image,
        mask_image=mask,
        num_images_per_prompt=2,
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).images
    source = np.asarray(image, dtype=np.float32) / 255
    kept = hole == 0

    def pre_error(pixels: np.ndarray) -> float:
        return float(((pixels - source) ** 2)[:, kept].mean())

    def outputs(name: str) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted((tmp_path / name).glob("*.png"))]
        )

    ours, tiled, blind = pre_error(outputs("whole")), pre_error(outputs("tiled")), pre_error(stock)
    print(f"FLUX inpaint pre_error: asymvae {ours:.3e}, tiled {tiled:.3e}, stock pipeline (blind) {blind:.3e}")
    assert ours < 0.5 * blind and tiled < 0.5 * blind
