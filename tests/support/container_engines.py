"""The container engines the image tests use, found on this machine: podman (or Docker) builds the image, a
Docker engine's API runs it under kfp.local's DockerRunner.

No container registry is needed: the base image is built from Debian's archive (`mmdebstrap`, then imported),
and the build reaches the package index exactly as this machine's pip does (`pip config list`: index URLs,
find-links, CA bundle and constraints file become build arguments, read-only mounts and build secrets, none of
which stays in the image). `.ci/container-engines` installs and starts both engines on Debian.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOW_TO_GET_ONE = (
    "no container engine: install podman or Docker (on Debian or Ubuntu, `. .ci/container-engines` installs "
    "podman and a Docker engine from the distribution and starts them)"
)
HOW_TO_GET_DOCKER = (
    "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock): kfp.local's DockerRunner needs one; "
    "`. .ci/container-engines` starts one"
)
IMAGE_TAG = "localhost/asymvae:test"
"""The image tests/test_image.py builds from the repository."""
TEST_BASE = "localhost/asymvae-test-base:bookworm"
"""Debian bookworm minbase (Python 3.11, like the torch wheels this machine's index serves)."""


def _works(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


def builder() -> str | None:
    """The engine that builds: podman when it works here, else Docker (with BuildKit), else None."""
    if _works("podman", "info"):
        return "podman"
    if _works("docker", "info"):
        return "docker"
    return None


def docker_api() -> bool:
    """True when a Docker engine answers the Docker API (what kfp.local's DockerRunner talks to)."""
    import docker

    try:
        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


def image_exists(engine: str, image: str) -> bool:
    """Whether `engine` holds `image`."""
    return subprocess.run([engine, "image", "inspect", image], capture_output=True, timeout=60).returncode == 0


LOW_PRIORITY = ["nice", "-n", "19"]
"""Prefix of the build commands run in the background: the tests running meanwhile keep the CPU."""


def base_image(engine: str) -> str:
    """TEST_BASE, built from Debian's archive with mmdebstrap unless `engine` has it already."""
    if not image_exists(engine, TEST_BASE):
        with tempfile.TemporaryDirectory(prefix="asymvae-base-") as tmp:
            tar = Path(tmp) / "base.tar"
            subprocess.run(
                [*LOW_PRIORITY, "mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(tar)],
                check=True,
                timeout=900,
            )
            subprocess.run([engine, "import", str(tar), TEST_BASE], check=True, capture_output=True, timeout=600)
    return TEST_BASE


def _pip_settings() -> dict[str, str]:
    """This machine's pip settings, e.g. {"extra-index-url": "...", "cert": "..."} (the last one of each name)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if value:
            settings[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def mirror_arguments(engine: str) -> list[str]:
    """Build arguments that give the build this machine's view of the package index: URLs as build arguments,
    local index folders mounted read-only at the same path (podman), the CA bundle and constraints as secrets."""
    args: list[str] = []
    settings = _pip_settings()
    for key, arg in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                     ("find-links", "PIP_FIND_LINKS"), ("trusted-host", "PIP_TRUSTED_HOST")):  # fmt: skip
        values = settings.get(key, "").split()
        local = [v.removeprefix("file://") for v in values if v.startswith(("file://", "/"))]
        if local and engine != "podman":
            values = [v for v in values if not v.startswith(("file://", "/"))]  # only podman mounts during a build
        for folder in local if engine == "podman" else []:
            # a PEP 503 index `ROOT/simple` links to files beside it, under ROOT
            mount = str(Path(folder).parent) if Path(folder).name == "simple" else folder
            args += ["--volume", f"{mount}:{mount}:ro"]
        if values:
            args += ["--build-arg", f"{arg}={' '.join(values)}"]
    for key, secret in (("cert", "pip-cert"), ("constraint", "pip-constraints")):
        if settings.get(key) and Path(settings[key]).is_file():
            args += ["--secret", f"id={secret},src={settings[key]}"]
    return args


@dataclass
class Built:
    """An image built for the tests."""

    tag: str
    engine: str
    seconds: float
    size_bytes: int


def build_image(tag: str) -> Built:
    """Build docker/Dockerfile from the repository as `tag` on the test base, without the standard LPIPS
    backbones (downloading them needs the internet)."""
    engine = builder()
    if engine is None:
        raise RuntimeError(HOW_TO_GET_ONE)
    base = base_image(engine)
    cmd = [*LOW_PRIORITY, engine, "build", "--network", "host", "-f", "docker/Dockerfile", "-t", tag, "--build-arg",
           f"BASE_IMAGE={base}", "--build-arg", "LPIPS_WEIGHTS=none", *mirror_arguments(engine), "."]  # fmt: skip
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    size = json.loads(subprocess.check_output([engine, "image", "inspect", tag, "--format", "{{json .Size}}"]))
    return Built(tag, engine, seconds, int(size))


def image_id(engine: str, image: str) -> str | None:
    """The image ID `engine` has for `image` (hex, without `sha256:`), or None when it has no such image."""
    found = subprocess.run([engine, "image", "inspect", image, "--format", "{{.Id}}"], capture_output=True, text=True)
    return found.stdout.strip().removeprefix("sha256:") or None if found.returncode == 0 else None


def into_docker(built: Built) -> None:
    """Make `built` available to the Docker engine (podman's images live elsewhere: save | load). A tag the Docker
    engine holds from an earlier build is replaced: it would run old code under the new tag."""
    if built.engine == "docker" or image_id("docker", built.tag) == image_id("podman", built.tag):
        return
    save = subprocess.Popen([*LOW_PRIORITY, "podman", "save", built.tag], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True, timeout=1800)
    save.stdout.close()
    if save.wait(timeout=60) != 0 or load.returncode != 0:
        raise RuntimeError(f"podman save {built.tag} | docker load failed: {load.stderr[-2000:]}")


class EarlyBuild:
    """The test image built (and handed to the Docker engine) in a background thread from the start of the test
    session, so that the minutes of a cold build (mostly pip and writing layers) overlap the rest of the suite
    instead of adding to it; the image tests wait for it."""

    _future: Future | None = None

    @classmethod
    def start(cls, tag: str) -> None:
        """Start building `tag` unless a build started already or no engine exists."""
        if cls._future is not None or builder() is None:
            return
        cls._future = Future()

        def run() -> None:
            try:
                built = build_image(tag)
                if docker_api():
                    into_docker(built)
                cls._future.set_result(built)
            except BaseException as e:  # handed to the test that waits for it
                cls._future.set_exception(e)

        threading.Thread(target=run, name="image-build", daemon=True).start()

    @classmethod
    def result(cls, tag: str) -> Built:
        """The built image (starting the build now if nothing started it)."""
        cls.start(tag)
        if cls._future is None:
            raise RuntimeError(HOW_TO_GET_ONE)
        return cls._future.result()
