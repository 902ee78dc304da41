"""The pipeline's parameters, each declared once.

A parameter that only feeds one component input is taken from that component (`From`): its type, default and
description are the component's, which for train and deploy come from the library's step config
(asymvae_components._params). A parameter of the pipeline's own (`Own`: shared by several steps, or about
a step's own pod) is declared here. `signature()` and `docstring()` turn the table into the pipeline function's
signature and `Args:`, which KFP compiles into the YAML and shows in the UI. `compiled_parameters()` reads
them back from the committed YAML without kfp, for the command line's `--pipeline.NAME` flags.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_KFP_TYPES = {"String": str, "Integer": int, "Float": float, "Boolean": bool, "List": list, "Dict": dict}
_COMPILED_TYPES = {
    "STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool, "LIST": list, "STRUCT": dict,
}  # fmt: skip
COMPILED = Path(__file__).with_name("asymvae_pipeline.yaml")
"""The compiled pipeline, committed and installed with this package (`make compile` writes it)."""


@dataclass(frozen=True)
class From:
    """A pipeline parameter passed straight to one input of one component, declared by that component."""

    name: str
    component: Any
    """A KFP component (`@dsl.component` function)."""
    input: str

    def spec(self) -> tuple[type, Any, str]:
        """(type, default, description) as the component declares them."""
        found = self.component.component_spec.inputs[self.input]
        return _KFP_TYPES[found.type], found.default, found.description or ""


@dataclass(frozen=True)
class Own:
    """A parameter of the pipeline itself."""

    name: str
    type: type
    default: Any
    doc: str

    def spec(self) -> tuple[type, Any, str]:
        """(type, default, description)."""
        return self.type, self.default, self.doc


Param = From | Own


def signature(params: list[Param]) -> inspect.Signature:
    """The pipeline function's signature: every parameter keyword-able, with its type and default."""
    out = []
    for p in params:
        tp, default, _ = p.spec()
        out.append(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=tp))
    return inspect.Signature(out)


def docstring(summary: str, params: list[Param]) -> str:
    """`summary` and an `Args:` section from each parameter's description."""
    lines = [summary, "", "Args:"]
    for p in params:
        first, *rest = p.spec()[2].splitlines() or [""]
        lines += [f"    {p.name}: {first}", *(f"        {line.strip()}" for line in rest)]
    return "\n".join(lines)


def compiled_parameters(path: Path = COMPILED) -> list[tuple[str, type, Any, str]]:
    """(name, type, default, description) of every pipeline parameter, as compiled into the pipeline's YAML:
    the signature above, read without importing kfp (so that `asymvae pipeline submit --help` stays light)."""
    with path.open() as f:
        spec = next(yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    out = []
    for name, p in spec["root"]["inputDefinitions"]["parameters"].items():
        tp = _COMPILED_TYPES[p["parameterType"]]
        default = p.get("defaultValue")
        out.append((name, tp, int(default) if tp is int else default, p.get("description", "")))
    return out
