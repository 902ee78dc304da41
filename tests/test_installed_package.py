"""asymvae as a user installs it: a wheel (not editable) in a fresh environment, used from an empty folder
outside any checkout, through its console script. The Kubeflow layer comes with it: compile, run-local
(the whole pipeline through kfp.local), submit and schedule (against a stand-in KFP API).

The fresh environment reuses this environment's third-party packages (a .pth file naming their folder; its
own .pth files, among them the editable install's, are not read), so only asymvae itself is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.support.kfp_standin import KFPStandInServer

pytestmark = pytest.mark.integration  # a wheel built and installed into a fresh environment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of what the build reads (setuptools writes build/ beside it)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("asymvae", "components", "pipelines"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (found,) = out.glob("asymvae-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel installed; returns its bin folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    purelib = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "third_party.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return env_dir / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(cwd)}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(bin_dir / "asymvae"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_wheel_holds_the_library_and_the_kubeflow_layer_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("asymvae-")}
    assert tops == {"asymvae", "asymvae_components", "asymvae_pipelines"}
    for step in ("prepare", "train", "evaluate", "export", "deploy"):
        assert f"asymvae_components/{step}/component.py" in names
        assert f"asymvae_components/{step}/component.yaml" in names
    assert "asymvae_pipelines/asymvae_pipeline.yaml" in names
    # every package of the source tree is in the wheel (a new subpackage must be listed in pyproject.toml)
    for folder, top in (
        ("asymvae", "asymvae"),
        ("components", "asymvae_components"),
        ("pipelines", "asymvae_pipelines"),
    ):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO / folder).as_posix()
            assert f"{top}/{rel}" in names, f"{folder}/{rel} is not packaged: add it to [tool.setuptools] packages"
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_installed_commands_work_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _run(installed, empty, "pipeline", "compile", "--components", "components")
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load_all((empty / "asymvae_pipeline.yaml").read_text())
    assert next(spec)["pipelineInfo"]["name"] == "asymvae"
    assert (empty / "components" / "train" / "component.yaml").is_file()

    with KFPStandInServer() as (state, url):
        image = ("--image", "reg.example/asymvae:1")
        done = _run(installed, empty, "pipeline", "submit", "--host", url, *image, "--pipeline.nodes=2")
        assert done.returncode == 0, done.stderr
        assert state.calls("POST", "/runs")[0].body["runtime_config"]["parameters"] == {"nodes": 2}
        done = _run(installed, empty, "pipeline", "schedule", "--host", url, *image, "--cron", "0 0 3 * * *")
        assert done.returncode == 0, done.stderr
        assert len(state.calls("POST", "/recurringruns")) == 1

    where = subprocess.run(
        [installed / "python", "-c", "import asymvae, asymvae_components, asymvae_pipelines as p; print(p.__file__)"],
        cwd=empty, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(REPO) not in where and "site-packages" in where


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_run_local_produces_every_artifact(installed: Path, tmp_path: Path, base_vae_dir: Path) -> None:
    """The whole pipeline through kfp.local, from the installed console script, with a tiny model."""
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = [f"model.pretrained={base_vae_dir / 'vae'}", "train.max_steps=4", "train.checkpoint_every=2",
                 "train.batch_size=2", "data.resolution=32", "loss.lpips.weight=0"]  # fmt: skip
    params = {
        "overrides": overrides,
        "prepare_overrides": ["prepare.max_samples=24", "prepare.max_side=128"],
        "runs_dir": str(tmp_path / "runs"),
        "eval_resolution": 32,
        "eval_max_images": 4,
    }
    args = [f"--pipeline.{k}={json.dumps(v)}" for k, v in params.items()]
    done = _run(installed, empty, "pipeline", "run-local", "--root", "runs", *args, timeout=850)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (empty / "runs").iterdir()
    assert f"artifacts under {run_dir}" in done.stdout

    from asymvae_pipelines.local import collect_artifacts

    found = {(a.task, a.output): a for a in collect_artifacts(run_dir)}
    dataset = found["prepare", "dataset"]
    assert (Path(dataset.uri) / "manifest.json").is_file()
    assert dataset.metadata["train_samples"] + dataset.metadata["val_samples"] == 24

    model = found["train", "model"]
    assert (Path(model.uri) / "vae" / "config.json").is_file()
    assert (Path(model.uri) / "baseline" / "vae" / "config.json").is_file()
    assert model.metadata["steps"] == 4 and model.metadata["launcher"] == "local"

    metrics = found["evaluate", "metrics"].metadata
    for decoder in ("baseline", "asymmetric"):
        assert metrics[f"masked/{decoder}/pre_error"] > 0
    assert metrics["pre_error_ratio"] == pytest.approx(
        metrics["masked/asymmetric/pre_error"] / metrics["masked/baseline/pre_error"], rel=1e-6
    )
    html = Path(found["evaluate", "report"].uri).read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    assert "pre_error" in Path(found["evaluate", "table"].uri).read_text()
    assert (Path(found["evaluate", "results"].uri) / "metrics.json").is_file()

    exports = {a.metadata["format"]: Path(a.uri) for (task, _), a in found.items() if task.startswith("export")}
    assert (exports["diffusers"] / "vae" / "config.json").is_file()
    assert (exports["triton"] / "asymvae_decoder" / "config.pbtxt").is_file()
    assert (exports["triton"] / "asymvae_decoder" / "1" / "model.onnx").is_file()
    assert ("deploy", "manifest") not in found  # deploy_model defaults to False
