"""Validate a custom object against its CustomResourceDefinition's openAPIV3Schema, offline.

Kubernetes prunes unknown fields instead of rejecting them, and the schemas as published accept them,
so a misspelt field (`nodeSelecter`) would pass silently. `closed_schema` closes every object schema that
lists `properties` and neither sets `additionalProperties` nor `x-kubernetes-preserve-unknown-fields`,
which turns such a typo into an error. CEL rules (`x-kubernetes-validations`) are not evaluated.
Needs the `jsonschema` package (a development dependency).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from asymvae.extras import require

_EMBEDDED = ("apiVersion", "kind", "metadata")


class CRDValidationError(ValueError):
    """A manifest does not match its CRD schema; the message lists every offending field path."""


@functools.lru_cache(maxsize=8)
def _load_crd(path: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as f:
        return yaml.load(f, Loader=loader)


def crd_identity(crd_path: str | Path) -> tuple[str, str, list[str]]:
    """(group, kind, served versions) of the CRD in `crd_path`."""
    crd = _load_crd(str(crd_path))
    spec = crd["spec"]
    return spec["group"], spec["names"]["kind"], [v["name"] for v in spec["versions"] if v.get("served", True)]


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` in which every object with `properties` rejects fields it does not list."""
    schema = copy.deepcopy(schema)
    _close(schema)
    return schema


def _close(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    props = node.get("properties")
    if (
        isinstance(props, dict)
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        if node.get("x-kubernetes-embedded-resource"):
            # An embedded object always accepts apiVersion/kind/metadata, listed or not.
            for name in _EMBEDDED:
                props.setdefault(name, {})
        node["additionalProperties"] = False
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for child in value.values():
                _close(child)
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            _close(value)


@functools.lru_cache(maxsize=16)
def _validator(path: str, version: str) -> Any:
    jsonschema = require("jsonschema", "dev", "CRD schema validation")
    crd = _load_crd(path)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return jsonschema.Draft7Validator(closed_schema(v["schema"]["openAPIV3Schema"]))
    raise CRDValidationError(f"{path}: the CRD has no version {version!r}")


def schema_errors(obj: dict[str, Any], crd_path: str | Path) -> list[str]:
    """Every violation of the (closed) CRD schema by `obj`, as `field.path: message`, sorted; [] when valid."""
    group, kind, versions = crd_identity(crd_path)
    api_version = str(obj.get("apiVersion", ""))
    obj_group, _, version = api_version.rpartition("/")
    if obj_group != group or version not in versions or obj.get("kind") != kind:
        return [
            f"apiVersion/kind {api_version}/{obj.get('kind')} is not defined by {crd_path} "
            f"({group}/{{{','.join(versions)}}} {kind})"
        ]
    validator = _validator(str(crd_path), version)
    errors = []
    for err in validator.iter_errors(obj):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
        errors.append(f"{where or '<root>'}: {err.message}")
    return sorted(errors)


def validate_custom_object(obj: dict[str, Any], crd_path: str | Path) -> None:
    """Raise CRDValidationError naming every bad field of `obj` against the CRD in `crd_path`."""
    errors = schema_errors(obj, crd_path)
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        raise CRDValidationError(f"{obj.get('kind')} {name!r} does not match {crd_path}:\n  " + "\n  ".join(errors))
