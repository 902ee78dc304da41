"""Command-line options derived from a command's typed config: one flag per dataclass field.

Each field becomes `--field-name` (or a positional argument), typed like the field (values parsed as YAML
and checked as a config file's are), required when the field has no default, with the field's docstring
and default as its help. Booleans get `--flag` / `--no-flag`; list fields are repeated flags. `from_args`
builds the dataclass; its own checks raise `ConfigError`, a user error.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

from asymvae.config import ConfigError, field_docs, parse_value

T = TypeVar("T")

PRESET_NOTE = " (defaults are the config classes' own; a preset sets its own: `asymvae configs NAME` prints them)"


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    options: type,
    func: Any,
    help: str,
    description: str | None = None,
    positional: tuple[str, ...] = (),
    set_keys: tuple[type, str, str] | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand `name`, its options derived from dataclass `options`, calling `func(args)`.

    `set_keys` = (config class, section, note) lists that config's `--set` keys in the `--help` epilog.
    """
    extra: dict[str, Any] = {}
    if set_keys is not None:
        extra = {"epilog": set_epilog(*set_keys), "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser = sub.add_parser(name, help=help, description=description or f"{help[0].upper()}{help[1:]}.", **extra)
    add_options(parser, options, positional=positional)
    parser.set_defaults(func=func)
    return parser


def add_options(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """Add one argument per field of dataclass `cls`; `positional` fields take no dashes."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = _default(f)
        help_text = docs.get(f.name, "").replace("%", "%%")
        if f.name in positional:
            optional = {} if default is dataclasses.MISSING else {"nargs": "?", "default": default}
            parser.add_argument(f.name, type=_parser(tp, f.name), help=help_text, metavar=f.name.upper(), **optional)
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if default not in (None, "", [], ()) and tp is not bool:
                kwargs["help"] += f" (default: {_shown(default)})"
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            kwargs.update(action="append", type=_parser(item, f.name), metavar=f.name.upper().rstrip("S"))
            if default is not dataclasses.MISSING:
                kwargs["default"] = None  # argparse appends to a given default list; start empty
        else:
            kwargs.update(type=_parser(tp, f.name), metavar=_metavar(tp, f.name))
        parser.add_argument(flag, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """The dataclass `cls` from parsed arguments (fields not on the command line keep their defaults)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.init and hasattr(args, f.name):
            value = getattr(args, f.name)
            if value is None and _default(f) not in (None, dataclasses.MISSING):
                continue  # a repeated flag given zero times: the field's own default
            values[f.name] = value
    values.update(extra)
    try:
        return cls(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _parser(tp: Any, name: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return parse_value(tp, text, name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    parse.__name__ = getattr(tp, "__name__", str(tp))  # argparse names the type in its error message
    return parse


def _metavar(tp: Any, name: str) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return {int: "N", float: "X"}.get(args[0], name.upper())


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def set_epilog(cls: type, section: str = "", note: str = "") -> str:
    """The `--help` epilog listing every `--set` key of config dataclass `cls` with its docstring."""
    return f"--set keys{note}:\n" + "\n".join(settable_keys(cls, section))


def settable_keys(cls: type, section: str = "") -> list[str]:
    """Help lines for `--set KEY=VALUE`: every key of config dataclass `cls` (nested sections flattened to
    `section.field`), its type, default and docstring."""
    lines = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{section}.{f.name}" if section else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += settable_keys(tp, key)
            continue
        default = _default(f)
        shown = "required" if default is dataclasses.MISSING else f"default {_shown(default) or repr(default)}"
        doc = " ".join(docs.get(f.name, "").split())
        lines.append(f"  {key} ({_type_name(tp)}, {shown}): {doc}")
    return lines


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return f"{getattr(origin, '__name__', str(origin))}[{args}]"
