"""VAE folders: find, load (for evaluation, export or inference) and save, as diffusers lays them out."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.data.provenance import PROVENANCE_NAME
from asymvae.model.build import VAE, ModelSourceError
from asymvae.model.latent_space import PIPELINE_KEYS

__all__ = ["load_vae", "read_provenance", "read_run_config", "save_vae", "vae_folder"]

_CLASSES: dict[str, type[VAE]] = {"AutoencoderKL": AutoencoderKL, "AsymmetricAutoencoderKL": AsymmetricAutoencoderKL}

KEPT_KEYS = frozenset((*PIPELINE_KEYS, "block_out_channels"))
"""config.json keys `AsymmetricAutoencoderKL.__init__` does not take, which `from_pretrained` still registers on the
loaded model's config (tests/test_families.py pins it): diffusers' warning that they "will be ignored" is wrong."""


class _KeptKeysWarning(logging.Filter):
    """Drops diffusers' "config attributes ... will be ignored" warning when it names only `KEPT_KEYS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("The config attributes ") or " were passed to " not in message:
            return True
        try:
            named = ast.literal_eval(message[len("The config attributes ") : message.index(" were passed to ")])
        except (ValueError, SyntaxError):
            return True
        return not (isinstance(named, dict) and set(named) <= KEPT_KEYS)


@contextmanager
def _without_kept_keys_warning() -> Iterator[None]:
    config_log = logging.getLogger("diffusers.configuration_utils")
    quiet = _KeptKeysWarning()
    config_log.addFilter(quiet)
    try:
        yield
    finally:
        config_log.removeFilter(quiet)


def vae_folder(path: str | Path) -> Path:
    """The folder holding the VAE's `config.json`: `path/vae` (a training export, `OUTPUT/step<N>`) or `path`.

    Raises `ModelSourceError` naming what was looked for when neither holds a diffusers VAE.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelSourceError(
            f"model folder {root} does not exist. Point it at a training export (e.g. work_dirs/demo/step400) "
            "or at a folder written by save_pretrained."
        )
    for candidate in (root / "vae", root):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelSourceError(
        f"{root} holds no diffusers VAE: expected {root / 'vae' / 'config.json'} (a training export) "
        f"or {root / 'config.json'} (a save_pretrained folder)."
    )


def load_vae(path: str | Path, require: type[VAE] | None = None, load_as: type[VAE] | None = None) -> VAE:
    """The VAE at `path` (see `vae_folder`), as the class its config.json names, in eval mode.

    `require=AsymmetricAutoencoderKL` rejects a plain VAE with a message saying what was found;
    `load_as` loads the weights into a subclass of `require` instead (e.g. one that overrides `decode`).
    """
    folder = vae_folder(path)
    try:
        name = str(AutoencoderKL.load_config(folder).get("_class_name", "AutoencoderKL"))
    except Exception as e:  # a corrupt or foreign config.json
        raise ModelSourceError(f"cannot read {folder / 'config.json'}: {e}") from e
    cls = _CLASSES.get(name)
    if cls is None:
        raise ModelSourceError(f"{folder} holds a {name}; expected one of {', '.join(_CLASSES)}")
    if require is not None and not issubclass(cls, require):
        raise ModelSourceError(f"{folder} holds a {name}, but a {require.__name__} is needed here")
    try:
        with _without_kept_keys_warning():
            vae = (load_as or cls).from_pretrained(folder)
    except Exception as e:
        raise ModelSourceError(f"cannot load {name} from {folder}: {e}") from e
    return vae.eval().requires_grad_(False)


def _beside_vae(path: str | Path, name: str) -> Path | None:
    """The file `name` beside `vae/` in the training export `path` (or its parent, for `path` = `.../vae`)."""
    root = Path(path).expanduser()
    for candidate in (root / name, root.parent / name):
        if candidate.is_file() and (candidate.parent / "vae").is_dir():
            return candidate
    return None


def read_run_config(path: str | Path) -> dict[str, Any] | None:
    """The training `config.yaml` beside `vae/` (as a dict), or None when the folder has none."""
    candidate = _beside_vae(path, "config.yaml")
    if candidate is None:
        return None
    try:
        data = yaml.safe_load(candidate.read_text())
    except yaml.YAMLError as e:
        raise ModelSourceError(f"{candidate} is not valid YAML: {e}") from e
    return data if isinstance(data, dict) else None


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """What the training export `path` was trained from (its `provenance.json` beside `vae/`, see
    asymvae.data.provenance), or None when it has none."""
    candidate = _beside_vae(path, PROVENANCE_NAME)
    if candidate is None:
        return None
    try:
        data = json.loads(candidate.read_text())
    except ValueError as e:
        raise ModelSourceError(
            f"{candidate} is not valid JSON ({e}). Fix: delete it, or export from the run again"
        ) from e
    return data if isinstance(data, dict) else None


def save_vae(vae: VAE, folder: Path) -> Path:
    """Save `vae` to `folder/vae` (safetensors + config.json): `from_pretrained(folder, subfolder="vae")` loads it."""
    target = Path(folder) / "vae"
    vae.save_pretrained(target, safe_serialization=True)
    return target
