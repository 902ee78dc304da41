"""`pip install asymvae` into an environment that has another supported torch keeps that torch.

pip's real resolver decides (`pip install --dry-run --report`, against the package index pip is configured
with) for the project's own pyproject.toml, in a fresh venv that already holds torch and torchvision of
other releases than constraints.txt pins. They are stand-in installed distributions: a `.dist-info` folder
as a wheel install leaves it (METADATA, INSTALLER, RECORD: the installed-project layout of
packaging.python.org/specifications/recording-installed-packages, which pip reads to know what is
installed), modelled on `torch-<version>.dist-info/METADATA` of torch's wheel with Name, Version and the
torchvision -> torch pin kept, and torch's own requirements left out so that only asymvae's drive the
resolution. Slow: the resolver fetches the metadata of every dependency (15 s to a minute, cache permitting).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A user's pair, other than constraints.txt's (torch 2.14.1, torchvision 0.29.1): torchvision pins its torch.
INSTALLED = {"torch": ("2.13.0", []), "torchvision": ("0.28.0", ["torch==2.13.0"])}


def _seed(site_packages: Path, name: str, version: str, requires: list[str]) -> None:
    info = site_packages / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("".join(f"{info.name}/{f},,\n" for f in ("METADATA", "INSTALLER", "RECORD")))


@pytest.mark.slow
def test_pip_install_keeps_the_users_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    for name, (version, requires) in INSTALLED.items():
        _seed(Path(purelib), name, version, requires)
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    result = subprocess.run(
        [*pip, "install", "--dry-run", "--quiet", "--report", str(report), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    install = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "asymvae" in install and "diffusers" in install  # the resolution really ran, for the project
    assert "torch" not in install and "torchvision" not in install, install
