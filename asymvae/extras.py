"""Optional dependencies, imported where they are used: one line naming the extra that installs a missing one.

`pip install asymvae` brings what training, evaluation and the diffusers export need. The rest comes in extras
(pyproject.toml): `kubeflow` (kfp, kfp-kubernetes, kubernetes, docker), `export` (onnx, onnxruntime, Triton's
config schema), `serving` (tritonclient: Triton's config schema and the binary v2 payloads of `asymvae infer`),
`stlpips` (shift-tolerant LPIPS), `demo` (the built-in demo images), `serve` (KServe's model server for
`asymvae serve`), `all` (every one of these but `serve`) and `dev` (all and serve, plus the test tools).
Such a package is imported through `require`, or checked without importing it through `check_installed`; only
`asymvae.serving.predictor` imports kserve directly.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from asymvae.errors import UserError

__all__ = ["MissingExtraError", "check_installed", "require"]


class MissingExtraError(UserError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import and return `module` (dotted), or raise MissingExtraError naming `extra`.

    `what` is the feature that needs it, as the user asked for it (e.g. "asymvae export --format onnx").
    Only a module that is not installed is reported this way; any other import failure propagates as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = (e.name or module).split(".")[0]  # the distribution's top-level package, as users know it
        raise _missing(missing, extra, what) from e


def check_installed(module: str, extra: str, what: str) -> None:
    """Raise MissingExtraError naming `extra` when top-level package `module` is not installed, without importing
    it (a package that only checks, so that building `--help` stays light)."""
    if importlib.util.find_spec(module) is None:
        raise _missing(module, extra, what)


def _missing(module: str, extra: str, what: str) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the {extra} extra (no module named {module!r}): pip install 'asymvae[{extra}]'"
    )
