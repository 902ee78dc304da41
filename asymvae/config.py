"""The experiment configuration: typed sections, YAML files, presets and `--set a.b=value` overrides.

Each section lives beside the code that owns it; this module only composes them and turns text
(YAML files, command-line overrides) into checked, typed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asymvae.data.config import DataConfig
from asymvae.losses.config import LossConfig
from asymvae.masks import MaskConfig
from asymvae.model.config import ModelConfig
from asymvae.training.config import OptimConfig, TrainConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value."""


@dataclass
class ExperimentConfig:
    """Everything one training run needs."""

    name: str = "experiment"
    """Run name; the default output folder is `work_dirs/<name>`."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def output_dir(self) -> Path:
        """Where checkpoints, logs and exports go."""
        return Path(self.train.output_dir or Path("work_dirs") / self.name)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_yaml(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (loadable with `load_yaml`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(_unknown_key(path, key, names))
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def load_yaml(path: str | Path) -> ExperimentConfig:
    """Read an experiment config from a YAML file. Keys left out keep their defaults."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(ExperimentConfig, data)


def apply_overrides(cfg: T, overrides: list[str], section: str = "", example: str = "train.max_steps=100") -> T:
    """Return a copy of config dataclass `cfg` with `section.field=value` overrides applied (values parsed as YAML).

    `cfg` is the whole experiment, or with `section` (e.g. `prepare`) that one section: then every key
    starts with `section.`. `example` is the override the error for a malformed item suggests.
    """
    root = {section: to_dict(cfg)} if section else to_dict(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set {example}")
        node = root
        parts = key.strip().split(".")
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[: depth + 1])
            if not isinstance(node, dict) or part not in node:
                known = node.keys() if isinstance(node, dict) else []
                raise ConfigError(_unknown_key(prefix, part, known))
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(text) if text.strip() else ""
            else:
                node = node[part]
    return from_dict(type(cfg), root[section] if section else root, section)


def _unknown_key(path: str, key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {path!r}.{hint} Known here: {', '.join(sorted(known))}"


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against type `tp`, converting where the intent is unambiguous (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {tp}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as text
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # `--set model.decoder=2` style values that YAML parsed as numbers but the field wants text.
        return str(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value
