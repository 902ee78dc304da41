"""A checkpoint's training state in safetensors and JSON files: nothing of it is ever unpickled.

Each model's weights go to `model.safetensors` (`model_1.safetensors`, ...); every other stateful object
(optimizers, LR schedule, data position, EMA, loss scaler) to `<name>.json`, its tensors to
`<name>.safetensors`; each process's random generators to `rng-<rank>.json` / `rng-<rank>.safetensors`.
Loading reads JSON and safetensors only, so a checkpoint from anywhere cannot run code.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from asymvae.training.checkpoint import CheckpointError

log = logging.getLogger(__name__)

STATE_NAME = "trainer_state"
"""The object whose JSON file every checkpoint in this format has."""


class Stateful(Protocol):
    """What `save_state` and `load_state` keep: anything with `state_dict` and `load_state_dict`."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """`value` as JSON, its tensors moved into `tensors` under their path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__keys__": list(value), "__values__": [_encode(v, tensors, f"{path}.{k}") for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{path}: a {type(value).__name__} cannot be checkpointed as JSON")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__keys__" in value:
        return dict(zip(value["__keys__"], (_decode(v, tensors) for v in value["__values__"]), strict=True))
    return {k: _decode(v, tensors) for k, v in value.items()}


def write_state(folder: Path, name: str, state: dict[str, Any]) -> None:
    """Write one state dict as `<name>.json` and, when it holds tensors, `<name>.safetensors`."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, name)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(encoded))


def read_state(folder: Path, name: str) -> dict[str, Any]:
    """Read what `write_state` wrote (tensors on the CPU)."""
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _decode(json.loads((folder / f"{name}.json").read_text()), tensors)


def model_file(folder: Path, index: int) -> Path:
    """The weights file of the `index`-th model (`model.safetensors`, `model_1.safetensors`, ...)."""
    return folder / (f"model_{index}.safetensors" if index else "model.safetensors")


def rng_state() -> dict[str, Any]:
    """This process's random generators (Python, NumPy, torch, CUDA), for `save_state`."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(state.get("cuda", [])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def save_state(
    folder: Path, models: list[nn.Module], objects: dict[str, Stateful], rngs: list[dict[str, Any]], main: bool
) -> None:
    """Write the training state into `folder` (collective: every process calls it, since a state dict may
    gather from all ranks). The main process writes all of it: the models, `objects` and `rngs`, every
    process's generators (`rng_state()`) by rank, gathered by the caller, so that no other process writes into
    `folder` (which then need not be on storage every node shares)."""
    states = {name: obj.state_dict() for name, obj in objects.items()}
    if not main:
        return
    for index, model in enumerate(models):
        save_model(model, str(model_file(folder, index)))
    for name, state in states.items():
        write_state(folder, name, state)
    for rank, state in enumerate(rngs):
        write_state(folder, f"rng-{rank}", state)


def load_state(folder: Path, models: list[nn.Module], objects: dict[str, Stateful], rank: int) -> None:
    """Load what `save_state` wrote into the models and `objects`, and this process's generators (kept as
    they are, with a note, when the checkpoint was written by fewer processes). Raises a CheckpointError
    for weights that do not fit a model, the loaders' own errors for a damaged file."""
    for index, model in enumerate(models):
        try:
            load_model(model, str(model_file(folder, index)), strict=True)
        except RuntimeError as e:  # torch's load_state_dict: missing, unexpected or differently shaped weights
            detail = " ".join(str(e).split())[:300]
            raise CheckpointError(
                f"checkpoint {folder} was made for another model: its weights do not fit this one ({detail}). Fix: "
                "resume with the config it was made with (its config.yaml), or start a new run (another --output)."
            ) from None
    for name, obj in objects.items():
        obj.load_state_dict(read_state(folder, name))
    if (folder / f"rng-{rank}.json").is_file():
        _set_rng_state(read_state(folder, f"rng-{rank}"))
    else:
        log.info("%s has no random state of rank %d (written by fewer processes): generators as seeded", folder, rank)


def is_state_folder(folder: Path) -> bool:
    """Whether `folder` holds a training state in this format."""
    return (folder / f"{STATE_NAME}.json").is_file()
