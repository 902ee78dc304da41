"""One source for a component's settings: the library's step config dataclass.

A component's parameters that share a name with a field of the step's config (`TrainStepConfig`,
`DeployStepConfig`) take that field's documentation, and must carry its type and default: KFP embeds the
function's source in the container command and runs it there with the defaults written in it, so the literal
default has to stay in the signature, and `from_config` refuses (at import, so every test and command fails)
one that differs from the dataclass. The pipeline then takes each parameter it passes through from the
component (asymvae_pipelines.parameters), so nothing is restated by hand.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from asymvae.config import field_docs

F = TypeVar("F", bound=Callable[..., Any])
_ARG = re.compile(r"^    (\w+):")


def kfp_type(tp: Any) -> type:
    """The KFP parameter type (str, int, float, bool, list, dict) of a field or parameter annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return kfp_type(args[0]) if len(args) == 1 else str
    if origin is not None:
        return kfp_type(origin)
    return tp


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory called for lists and dicts)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name!r} has no default")


def disagreements(func: Callable[..., Any], config: type) -> list[str]:
    """Each parameter of `func` named like a field of `config` whose type or default differs from the field's."""
    hints = typing.get_type_hints(config)
    fields = {f.name: f for f in dataclasses.fields(config)}
    found = []
    for p in inspect.signature(func).parameters.values():
        if p.name not in fields:
            continue
        want_type, want_default = kfp_type(hints[p.name]), field_default(fields[p.name])
        if kfp_type(p.annotation) is not want_type:
            found.append(f"{p.name}: type {p.annotation!r}, {config.__name__} says {want_type.__name__}")
        if p.default != want_default or type(p.default) is not type(want_default):
            found.append(f"{p.name}: default {p.default!r}, {config.__name__} says {want_default!r}")
    return found


def from_config(config: type) -> Callable[[F], F]:
    """Decorator (under `@dsl.component`): check `func`'s parameters against `config`'s fields and document
    each from its field's docstring (KFP shows it in the UI and the component YAML)."""

    def wrap(func: F) -> F:
        wrong = disagreements(func, config)
        if wrong:
            raise TypeError(f"{func.__name__} disagrees with {config.__name__}: " + "; ".join(wrong))
        func.__doc__ = document(func.__doc__ or "", config, inspect.signature(func).parameters)
        return func

    return wrap


def document(doc: str, config: type, params: typing.Mapping[str, inspect.Parameter]) -> str:
    """`doc` with an `Args:` entry for every parameter in `params` that is a field of `config` (its field's
    docstring), after the entries written by hand (the artifacts'), in signature order."""
    docs = field_docs(config)
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index("Args:") + 1 if "Args:" in lines else len(lines)
    end = start
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    hand = _entries(lines[start:end])
    generated = {name: [f"    {name}: {' '.join(docs[name].split())}"] for name in params if name in docs}
    ordered = [hand.get(n) or generated[n] for n in params if n in hand or n in generated]
    head = lines[:start] if "Args:" in lines else [*lines, "", "Args:"]
    return "\n".join([*head, *(line for entry in ordered for line in entry), *lines[end:]])


def _entries(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        m = _ARG.match(line)
        if m:
            current = m.group(1)
            out[current] = [line]
        elif current and line.strip():
            out[current].append(line)
    return out
