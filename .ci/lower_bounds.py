"""Print pip constraints that pin each `>=` lower bound of pyproject.toml's requirements (`make test-lower`).

Usage: python .ci/lower_bounds.py [--skip NAME ...] [--extra NAME ...]
Core [project].dependencies always; `--extra` adds an extra's own requirements (not the extras it names).
`--skip` leaves a package to the main constraints (e.g. torch, whose lower end needs its own build).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import tomllib

_LOWER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(?:[^;]*,)?\s*>=\s*([^,;\s]+)")


def lower_bounds(requirements: list[str], skip: set[str]) -> list[str]:
    """`name==X` for every requirement with a `>=X` bound whose name is not in `skip` (names normalised)."""
    out = []
    for requirement in requirements:
        match = _LOWER.match(requirement.replace(" ", ""))
        if match is None:
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if name not in skip and name != "asymvae":
            out.append(f"{name}=={match.group(3)}")
    return out


def main() -> None:
    """Print the constraints for pyproject.toml in the current folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--extra", nargs="*", default=[])
    args = parser.parse_args()
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in args.extra:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(sorted(set(lower_bounds(requirements, {s.lower() for s in args.skip})))))


if __name__ == "__main__":
    main()
