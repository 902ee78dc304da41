"""Optional packages: without one, the feature that needs it stops with one line naming the extra to install.

Every case runs in one fresh interpreter (importing torch and diffusers once, not once per case), where the
case's package cannot be imported while it runs: `sys.modules[NAME] = None` is how Python's import system
itself marks a module as unavailable (`import NAME` then raises ModuleNotFoundError, CPython's
Lib/importlib/_bootstrap.py, `_find_and_load`), the error an environment without the package gives.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from asymvae.extras import MissingExtraError, require


def _message(extra: str, missing: str) -> str:
    return f"needs the {extra} extra (no module named {missing!r}): pip install 'asymvae[{extra}]'"


# id: (module made unavailable, what runs: a command line or library code, the expected error)
CASES: dict[str, tuple[str, list[str] | str, str]] = {
    # The command a user types: one line on stderr, exit status 2.
    "export-onnx": (
        "onnx",
        ["export", "model", "--format", "onnx", "--out", "out"],
        "asymvae export: error: asymvae export --format onnx " + _message("export", "onnx"),
    ),
    "export-onnxruntime": (
        "onnxruntime",
        ["export", "model", "--format", "onnx", "--out", "out"],
        "asymvae export: error: asymvae export --format onnx " + _message("export", "onnxruntime"),
    ),
    "export-triton": (
        "tritonclient",
        ["export", "model", "--format", "triton", "--out", "out"],
        "asymvae export: error: asymvae export --format triton " + _message("export", "tritonclient"),
    ),
    "pipeline-kfp": (
        "kfp",
        ["pipeline", "compile", "--out", "out"],
        "asymvae pipeline: error: the Kubeflow pipeline (asymvae pipeline ...) " + _message("kubeflow", "kfp"),
    ),
    "serve-kserve": (
        "kserve",
        ["serve", "model"],
        "asymvae serve: error: asymvae serve " + _message("serve", "kserve"),
    ),
    "prepare-demo": (
        "skimage",
        ["prepare", "builtin:demo", "--out", "out"],
        "asymvae prepare: error: the built-in demo images " + _message("demo", "skimage"),
    ),
    # Library entry points, for users who import asymvae rather than run the command: MissingExtraError.
    "stlpips-ipython": (
        "IPython",  # stlpips-pytorch imports it without declaring it: the stlpips extra brings it
        "from asymvae.losses.config import LPIPSConfig\n"
        "from asymvae.losses.perceptual import build_lpips\n"
        "build_lpips(LPIPSConfig(weight=0.1, net='alex', variant='shift_tolerant'))\n",
        "the shift-tolerant LPIPS (lpips variant shift_tolerant) " + _message("stlpips", "IPython"),
    ),
    "cluster-kubernetes": (
        "kubernetes",
        "import asymvae.cluster.runner\n",
        "running training jobs on Kubernetes (the PyTorchJob and TrainJob launchers) "
        + _message("kubeflow", "kubernetes"),
    ),
    "infer-tritonclient": (
        "tritonclient",
        "from asymvae.serving.client import ModelIO\nModelIO.from_triton_config('.')\n",
        "reading a Triton config.pbtxt " + _message("serving", "tritonclient"),
    ),
    "run-local-docker": (
        "docker",
        "from pathlib import Path\nfrom asymvae_pipelines.local import docker_runner\ndocker_runner(Path('.'), 'x')\n",
        "asymvae pipeline run-local --runner docker " + _message("kubeflow", "docker"),
    ),
}

# Runs each case with its module unavailable, then puts the module table back for the next case.
_RUNNER = """
import contextlib, io, json, sys
from asymvae.cli import main
from asymvae.extras import MissingExtraError

results = {}
for case, (missing, what, _expected) in json.loads(sys.argv[1]).items():
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == missing or k.startswith(missing + ".")}
    sys.modules[missing] = None
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            main(what) if isinstance(what, list) else exec(what, {})
        results[case] = ["returned", stderr.getvalue()]
    except SystemExit as e:
        results[case] = [e.code, stderr.getvalue()]
    except MissingExtraError as e:
        results[case] = ["raised", str(e)]
    finally:
        del sys.modules[missing]
        sys.modules.update(saved)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """{case: [exit status or "raised", stderr or the error's message]} for every case in CASES."""
    cwd = tmp_path_factory.mktemp("extras")
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(CASES)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_without_its_extra_one_error_names_the_extra(case: str, outcomes: dict[str, list]) -> None:
    _missing, what, expected = CASES[case]
    status, text = outcomes[case]
    if isinstance(what, list):  # the command: exit status 2 and one error line, no traceback (progress lines
        # such as "opening builtin:demo ..." may come before it)
        assert status == 2 and "Traceback" not in text
        assert [line for line in text.splitlines() if "error" in line] == [expected]
    else:
        assert (status, text) == ("raised", expected)


def test_require_returns_the_module_or_names_the_extra() -> None:
    assert require("json", "export", "x") is json
    with pytest.raises(MissingExtraError, match=r"^asymvae thing needs the demo extra \(no module named 'no_such_"):
        require("no_such_module_for_asymvae.sub", "demo", "asymvae thing")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["pipeline", "run-local", "--help"]])
def test_without_kfp_the_other_commands_and_help_still_work(argv: list[str]) -> None:
    """The kubeflow extra is checked when a pipeline command runs, not when the command line is built."""
    code = (
        "import sys\nsys.modules['kfp'] = None\nfrom asymvae.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: asymvae" in done.stdout
