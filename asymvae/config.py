"""Typed configuration from text: YAML files, command-line values and `section.field=value` overrides into
checked dataclasses.

Every config is a dataclass whose fields carry a docstring; each lives beside the code that owns it
(the experiment's sections in `asymvae/*/config.py`, composed by `asymvae.training.experiment`). This
module only turns text into checked, typed values, for any of them.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asymvae.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a resolved config dataclass as YAML (loadable with `load_yaml`)."""
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


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read config dataclass `cls` from a YAML file. Keys left out keep their defaults."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(cls, data)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`section.field=value` strings (the pipeline's `overrides` parameter) as {dotted key: value read as YAML}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.max_steps=100")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return out


def override_flag(item: str) -> str:
    """The command-line flag of one `section.field=value` override: `train.max_steps=5` -> `--train.max-steps=5`."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.max_steps=100")
    return f"--{key.strip().replace('_', '-')}={text}"


def apply_overrides(cfg: T, overrides: list[str] | dict[str, Any], section: str = "") -> T:
    """Return a copy of config dataclass `cfg` with overrides applied: `section.field=value` strings (values
    read as YAML) or a {dotted key: value} mapping (the command line's typed values).

    `cfg` is the whole experiment, or with `section` (e.g. `prepare`) that one section: then every key
    starts with `section.`. Every value is checked as a config file's would be.
    """
    values = parse_overrides(overrides) if isinstance(overrides, list) else overrides
    root = {section: to_dict(cfg)} if section else to_dict(cfg)
    for key, value in values.items():
        node = root
        parts = key.split(".")
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[: depth + 1])
            if not isinstance(node, dict) or part not in node:
                known = node.keys() if isinstance(node, dict) else []
                raise ConfigError(_unknown_key(prefix, part, known))
            if depth == len(parts) - 1:
                node[part] = _plain(value)
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
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}.{hint}")
        return value
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
        # `--model.decoder 2` style values that YAML parsed as numbers but the field wants text.
        return str(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass `cls` (and its dataclass bases), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source at hand (e.g. a class made at run time)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def parse_value(tp: Any, text: str, path: str) -> Any:
    """A command-line value for a field of type `tp`: parsed as YAML, then checked like a config file's."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    wants_text = tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))
    wants_text |= typing.get_origin(tp) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(tp))
    if wants_text and not isinstance(value, str) and (value is not None or tp is str):
        value = text  # `--name 007`, `--compile off` (or `--prompt null` for a plain str) stay the text it was
    return _coerce(tp, value, path)
