"""Command-line options derived from a command's typed config: one flag per dataclass field.

Every command takes its options the same way:

- A field of the command's own options becomes `--field-name` (or a positional argument), typed like the
  field (values read as YAML and checked as a config file's are), required when it has no default, with the
  field's docstring and default as its help. A switch that is off by default is `--flag`; one that is on by
  default is `--no-flag`. A list field is a repeated flag.
- A config section (a nested dataclass, e.g. the experiment's `train`, or `prepare`) becomes dotted flags,
  one per field, nested sections included: `--train.max-steps 5`, `--prepare.eval-masks.full-mask-prob 0`.
  They change only what is given on top of the base (a preset, a YAML file, the section's defaults):
  a switch is `--train.ema` (on) or `--train.ema false`; a list or tuple takes one YAML value
  (`--optim.betas [0.9,0.99]`). Their help shows the section's defaults, read from its parent's default.

A field typed `Literal[...]` lists its choices and takes only those. `--name_with_underscores` is accepted
for `--name-with-underscores`. An unknown option gets the closest known one as a hint (`unknown_options`).
Only the config dataclasses are imported to build a parser: nothing heavy (torch, diffusers, ...) loads
for `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from asymvae.config import ConfigError, apply_overrides, field_docs, parse_value

T = TypeVar("T")

SECTION = "section:"
"""Prefix of the argparse dest of a section flag: `--train.max-steps` is stored as `section:train.max_steps`."""

PRESET_NOTE = "defaults shown are the config classes' own; a preset sets its own: `asymvae configs NAME` prints them"


class Leaf(NamedTuple):
    """One settable value of a config section: its dotted key, type, default and help."""

    key: str
    type: Any
    default: Any
    doc: str


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    options: type,
    func: Callable[[argparse.Namespace], int],
    help: str,
    description: str | None = None,
    positional: tuple[str, ...] = (),
    sections: Iterator[Leaf] | None = None,
    sections_note: str = "",
) -> argparse.ArgumentParser:
    """Add subcommand `name`, its options derived from dataclass `options`, calling `func(args)`.

    `sections` adds the dotted flags of these leaves (e.g. `config_leaves(ExperimentConfig())`), grouped by
    section, `sections_note` under each group's title.
    """
    parser = sub.add_parser(
        name,
        help=help,
        description=description or f"{help[0].upper()}{help[1:]}.",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, options, positional=positional)
    if sections is not None:
        # The usage line names the sections' flags as one pattern; `--help` lists them by section.
        parser.usage = parser.format_usage().removeprefix("usage: ").strip() + " [--SECTION.FIELD VALUE ...]"
        add_leaves(parser, sections, sections_note)
    parser.set_defaults(func=func, parser=parser)
    return parser


def add_options(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """Add one argument per field of dataclass `cls`; `positional` fields take no dashes; a field that is itself
    a config dataclass becomes that section's dotted flags."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = _default(f)
        help_text = _escaped(docs.get(f.name, ""))
        if dataclasses.is_dataclass(tp):
            add_leaves(parser, config_leaves(default, f.name))
            continue
        if f.name in positional:
            optional = {} if default is dataclasses.MISSING else {"nargs": "?", "default": default}
            parser.add_argument(f.name, type=_parser(tp, f.name), help=help_text, metavar=f.name.upper(), **optional)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if default not in (None, "", [], ()) and tp is not bool:
                kwargs["help"] += f" (default: {_shown(default)})"
        if tp is bool:
            # Only the switch that changes something: --flag when off by default, --no-flag when on.
            kwargs["action"] = "store_false" if default else "store_true"
            kwargs["help"] += " (default: on; this flag turns it off)" if default else ""
        elif typing.get_origin(tp) in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            kwargs.update(action="append", type=_parser(item, f.name), metavar=f.name.upper().rstrip("S"))
            if default is not dataclasses.MISSING:
                kwargs["default"] = None  # argparse appends to a given default list; start empty
        else:
            kwargs.update(type=_parser(tp, f.name), metavar=_metavar(tp, f.name))
        _add_flag(parser, f.name, kwargs, negated=tp is bool and bool(default))


def config_leaves(cfg: Any, prefix: str = "") -> Iterator[Leaf]:
    """Every settable value of config dataclass instance `cfg` (nested sections flattened to `section.field`),
    with `cfg`'s values as defaults: a nested section's defaults are its parent's, not its class's."""
    docs = field_docs(type(cfg))
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_leaves(value, key)
        else:
            yield Leaf(key, hints[f.name], value, docs.get(f.name, ""))


def add_leaves(parser: argparse.ArgumentParser, leaves: Iterator[Leaf], note: str = "") -> None:
    """Add a dotted flag per leaf, each leaf's section an argument group; only given flags reach the namespace."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for leaf in leaves:
        section = leaf.key.rpartition(".")[0] or "top level"
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings", note or None)
        doc = " ".join(leaf.doc.split())
        shown = "required" if leaf.default is dataclasses.MISSING else f"default: {_shown(leaf.default)}"
        kwargs: dict[str, Any] = {
            "dest": SECTION + leaf.key,
            "default": argparse.SUPPRESS,
            "help": _escaped(f"{doc} ({shown})"),
            "type": _parser(leaf.type, leaf.key),
            "metavar": _metavar(leaf.type, "VALUE"),
        }
        if leaf.type is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        _add_flag(groups[section], leaf.key, kwargs)


def section_values(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The dotted flags given on the command line as {dotted key: value}; with `prefix`, only that section's."""
    start = SECTION + (f"{prefix}." if prefix else "")
    return {k.removeprefix(SECTION): v for k, v in vars(args).items() if k.startswith(start)}


def from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """The dataclass `cls` from parsed arguments (fields not on the command line keep their defaults; a config
    section is its default with the given dotted flags applied)."""
    values = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = apply_overrides(_default(f), section_values(args, f.name), section=f.name)
        elif f.init and hasattr(args, f.name):
            value = getattr(args, f.name)
            if value is None and _default(f) not in (None, dataclasses.MISSING):
                continue  # a repeated flag given zero times: the field's own default
            values[f.name] = value
    values.update(extra)
    try:
        return cls(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def unknown_options(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """The error for arguments `parser` does not know, with the closest known option as a hint."""
    known = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
    by_leaf: dict[str, list[str]] = {}
    for option in known:
        by_leaf.setdefault("--" + option[2:].rpartition(".")[2], []).append(option)
    message = f"unrecognized arguments: {' '.join(extras)}"
    for item in extras:
        if not item.startswith("--"):
            continue
        name = item.partition("=")[0].replace("_", "-")
        close = by_leaf.get(name) or difflib.get_close_matches(name, known, n=1)
        if not close:
            close = [o for leaf in difflib.get_close_matches(name, list(by_leaf), n=1) for o in by_leaf[leaf]]
        if close:
            message += f". {item.partition('=')[0]}: did you mean {' or '.join(close[:3])}?"
    return message


def _add_flag(parser: Any, name: str, kwargs: dict[str, Any], negated: bool = False) -> None:
    """Add `--name` spelt with dashes (`--no-name` when `negated`) and, when `name` has underscores, the hidden
    alias spelt with them."""
    no = "no-" if negated else ""
    parser.add_argument(f"--{no}{name.replace('_', '-')}", **kwargs)
    if "_" in name and not kwargs.get("required"):
        parser.add_argument(f"--{no}{name}", **{**kwargs, "help": argparse.SUPPRESS})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _parser(tp: Any, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parse_value(tp, text, name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    parse.__name__ = getattr(tp, "__name__", str(tp))  # argparse names the type in its error message
    return parse


def _metavar(tp: Any, name: str) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if typing.get_origin(tp) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(tp))) + "}"
    if typing.get_origin(args[0]) is typing.Literal:  # Literal[...] | None
        return "{" + ",".join([*map(str, typing.get_args(args[0])), "null"]) + "}"
    if typing.get_origin(tp) in (list, tuple) or tp in (list, tuple):
        return "LIST"
    if tp is dict:
        return "MAPPING"
    return {int: "N", float: "X"}.get(args[0], name.upper())


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "''"


def _escaped(text: str) -> str:
    return text.replace("%", "%%")
