"""The image for real: built from the repository with podman or Docker, the CLI and one compiled step run in it as
its non-root user, and the whole pipeline run in it by kfp.local's DockerRunner (the same container commands a
cluster runs) against the S3 server the suite starts.

Without a container engine each test skips with one line saying how to get one; `.ci/run` installs and starts
one first, so CI always builds the image. tests/support/container_engines.py says how the base and the package index
are reached without a registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asymvae_pipelines.compiled import compile_components
from tests.support.container_engines import (
    HOW_TO_GET_DOCKER,
    HOW_TO_GET_ONE,
    IMAGE_TAG,
    Built,
    EarlyBuild,
    builder,
    docker_api,
    into_docker,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image() -> Built:
    """The image built from the repository as it is (started at the beginning of the session; layers cached by the
    engine between runs)."""
    if builder() is None:
        pytest.skip(HOW_TO_GET_ONE)
    built = EarlyBuild.result(IMAGE_TAG)
    print(f"\nbuilt {built.tag} with {built.engine} in {built.seconds:.0f} s: {built.size_bytes / 2**30:.2f} GiB")
    return built


def run_in(image: Built, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
    """`cmd` in a fresh container of `image`, as the image's own user unless `user` is given."""
    as_user = ["--user", user] if user else []
    return subprocess.run(
        [image.engine, "run", "--rm", "--network", "host", *as_user, image.tag, *cmd],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_cli_runs_in_the_image_as_its_non_root_user(image: Built) -> None:
    done = run_in(image, "asymvae", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pipeline" in done.stdout and "train" in done.stdout
    assert run_in(image, "id", "-u").stdout.strip() == "10001"
    # its caches are writable by it, and by another UID with group 0 (OpenShift's restricted policy)
    for user in ("10001:10001", "123456:0"):
        wrote = run_in(image, "sh", "-c", 'touch "$HF_HOME/probe" && mkdir -p "$HOME/.cache/x"', user=user)
        assert wrote.returncode == 0, (user, wrote.stderr)
    # kserve too: the deploy step's runtime=predictor runs `asymvae serve` on this image
    where = run_in(image, "python", "-c", "import asymvae, asymvae_components as c, asymvae_pipelines as p, kfp, "
                   "kserve; print(p.__file__); print(c.component_file('train')); print(kserve.__file__)")  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert len(where.stdout.split()) == 3
    assert all("/site-packages/" in line for line in where.stdout.split())  # installed, not a copied tree
    # The build's package-index settings and secrets stayed out of the image; LPIPS_WEIGHTS=none baked nothing.
    env = run_in(image, "env").stdout
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_CONSTRAINT"):
        assert f"{name}=" not in env
    looked = run_in(image, "sh", "-c", "ls -A /run/secrets $TORCH_HOME 2>/dev/null | grep -v :")
    assert looked.stdout.strip() == ""  # no secret left behind, no backbone downloaded


def test_a_compiled_step_runs_in_the_image(image: Built, tmp_path: Path) -> None:
    """The prepare component's compiled container command, with the executor input KFP's driver would hand it,
    run by the image's own user on a mounted output folder."""
    compiled = compile_components(tmp_path / "components", image.tag)
    spec = yaml.safe_load(next(p for p in compiled if p.parent.name == "prepare").read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == image.tag
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the image's user (10001) writes here, as on a cluster's volume
    executor_input = {
        "inputs": {
            "parameterValues": {
                "source": "builtin:demo",
                "target": "",
                "overrides": ["prepare.max_samples=8", "prepare.max_side=64"],
                "s3_endpoint": "",
                "s3_use_https": False,
            }
        },
        "outputs": {
            "artifacts": {
                "dataset": {
                    "artifacts": [
                        {
                            "name": "dataset",
                            "type": {"schemaTitle": "system.Dataset"},
                            "uri": "/out/dataset",
                            "metadata": {},
                        }
                    ]
                }
            },
            "parameters": {"shards": {"outputFile": "/out/shards"}},
            "outputFile": "/out/executor_output.json",
        },
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    done = subprocess.run(
        [image.engine, "run", "--rm", "-v", f"{out}:/out", "--entrypoint", container["command"][0], image.tag,
         *container["command"][1:], *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert manifest["shards"]
    assert (out / "shards").read_text() == "/out/dataset/manifest.json"  # the output parameter train reads
    metadata = json.loads((out / "executor_output.json").read_text())["artifacts"]["dataset"]["artifacts"][0]
    assert metadata["metadata"]["train_samples"] + metadata["metadata"]["val_samples"] == 8


def test_the_pipeline_runs_in_the_image(image: Built, s3_server, base_vae_dir: Path, tmp_path: Path) -> None:
    """`asymvae pipeline run-local --runner docker`: every step a container of the image, data prepared into the
    object store the suite started, every artifact checked from this side of the container boundary."""
    if not docker_api():
        pytest.skip(HOW_TO_GET_DOCKER)
    into_docker(image)
    root = tmp_path / "runs"
    shutil.copytree(base_vae_dir, root / "base")  # under the pipeline root: the folder the runner mounts
    params = {
        "overrides": [
            f"model.pretrained={root / 'base' / 'vae'}",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.batch_size=2",
            "data.resolution=32",
            "loss.lpips.weight=0",
        ],
        "source": "builtin:demo",
        "prepare_target": "s3://asymvae/image-test",
        "prepare_overrides": ["prepare.max_samples=24", "prepare.max_side=128"],
        "eval_resolution": 32,
        "eval_max_images": 4,
    }
    cli = Path(sys.executable).with_name("asymvae")
    args = [f"--pipeline.{k}={json.dumps(v)}" for k, v in params.items()]
    env = {**os.environ, **s3_server.env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [str(cli), "pipeline", "run-local", "--runner", "docker", "--image", image.tag, "--root", str(root), *args],
        capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    print(done.stdout.splitlines()[-12:])

    from diffusers import AsymmetricAutoencoderKL

    from asymvae.data.manifest import load_manifest
    from asymvae_pipelines.local import collect_artifacts

    (run_dir,) = root.glob("asymvae-*")
    found = {(a.task, a.output): a for a in collect_artifacts(run_dir)}
    dataset = found["prepare", "dataset"].metadata
    assert dataset["manifest_uri"] == "s3://asymvae/image-test/manifest.json"
    assert dataset["train_samples"] + dataset["val_samples"] == 24
    os.environ.update(s3_server.env())
    manifest, store = load_manifest(dataset["manifest_uri"])
    assert len(manifest.shards) == dataset["shards"]
    for shard in manifest.shards:
        assert store.verify(shard.name, shard.sha256, shard.bytes) is None  # complete and intact

    model = Path(found["train", "model"].uri)
    assert AsymmetricAutoencoderKL.from_pretrained(model, subfolder="vae").config.latent_channels == 4
    assert found["train", "model"].metadata["steps"] == 4

    metrics = found["evaluate", "metrics"].metadata
    assert metrics["masked/asymmetric/pre_error"] > 0 and metrics["masked/baseline/pre_error"] > 0
    exports = {a.metadata["format"]: Path(a.uri) for (task, _), a in found.items() if task.startswith("export")}
    assert (exports["triton"] / "asymvae_decoder" / "config.pbtxt").is_file()
    assert (exports["triton"] / "asymvae_decoder" / "1" / "model.onnx").is_file()
    # written as the user who ran the pipeline, not as the image's user: the artifacts are yours to delete
    assert {p.stat().st_uid for p in run_dir.rglob("*")} == {os.getuid()}
