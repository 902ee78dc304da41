"""KServe's merge of a ServingRuntime's container into an InferenceService's predictor, and the checks the
Kubernetes API server applies to the pod that results (no KServe can run here).

The rule, as kserve/kserve implements it (`MergeRuntimeContainers` in
pkg/controller/v1beta1/inferenceservice/utils/utils.go): the runtime's container is the base and the
InferenceService's container a strategic merge patch over it: `resources.requests` and `resources.limits`
are maps merged key by key (the InferenceService's keys win, the runtime's others stay), `env` merges by
name, other fields are replaced, and `args` are concatenated (runtime's, then the InferenceService's). The
API server then refuses a container whose request of a resource exceeds its limit, and an extended
resource (e.g. `nvidia.com/gpu`) whose request differs from its limit. A custom predictor (`predictor.containers`,
kserve v0.16.0 pkg/apis/serving/v1beta1/predictor_custom.go) has no runtime: its containers are the pod's as
they are written.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

RUNTIMES = Path(__file__).resolve().parents[1] / "schemas" / "runtimes"
TRITON_RUNTIME = RUNTIMES / "kserve-tritonserver.yaml"
K8S_VERSION = "1.33.0"

_SUFFIX = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip


def quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity ("500m", "2", "8Gi", 4) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def runtime_container(path: Path = TRITON_RUNTIME) -> dict[str, Any]:
    """The (first) container of a ClusterServingRuntime file."""
    return yaml.safe_load(path.read_text())["spec"]["containers"][0]


def merge_container(runtime: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """KServe's merge of the InferenceService's container over the runtime's (see the module docstring)."""
    merged = copy.deepcopy(runtime)
    for key, value in isvc.items():
        if key == "resources":
            res = merged.setdefault("resources", {})
            for part in ("requests", "limits"):
                if part in value:
                    res[part] = {**res.get(part, {}), **value[part]}
        elif key == "env":
            by_name = {e["name"]: e for e in merged.get("env", [])}
            by_name.update({e["name"]: e for e in value})
            merged["env"] = list(by_name.values())
        elif key == "args":
            merged["args"] = list(runtime.get("args", [])) + list(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def predictor_container(isvc: dict[str, Any]) -> dict[str, Any]:
    """The container part of an InferenceService's `predictor.model` (what KServe merges)."""
    model = isvc["spec"]["predictor"]["model"]
    fields = {"resources", "env", "args", "image", "command", "ports", "volumeMounts"}
    return {k: v for k, v in model.items() if k in fields}


def container_errors(container: dict[str, Any]) -> list[str]:
    """What the API server would refuse in the merged container (request above limit, GPU request != limit)."""
    res = container.get("resources", {})
    requests, limits = res.get("requests", {}), res.get("limits", {})
    errors = []
    for name, req in requests.items():
        if name in limits and quantity(req) > quantity(limits[name]):
            errors.append(
                f"resources.requests.{name}: {req} must be less than or equal to the {name} limit of {limits[name]}"
            )
        if "/" in name and name in limits and quantity(req) != quantity(limits[name]):
            errors.append(f"resources.requests.{name}: must equal the limit for an extended resource")
    return errors


def pod_containers(isvc: dict[str, Any], runtime_path: Path = TRITON_RUNTIME) -> list[dict[str, Any]]:
    """The containers of the predictor's pod: the runtime merged into `predictor.model`, or a custom predictor's."""
    predictor = isvc["spec"]["predictor"]
    if "model" in predictor:
        return [merge_container(runtime_container(runtime_path), predictor_container(isvc))]
    return copy.deepcopy(predictor["containers"])


def merged_pod_errors(isvc: dict[str, Any], runtime_path: Path = TRITON_RUNTIME) -> list[str]:
    """The problems ([] when valid) of the pod KServe makes of the predictor (`pod_containers`): the API
    server's resource rules, then core/v1 Pod's schema (strict) via kubernetes-validate."""
    containers = pod_containers(isvc, runtime_path)
    errors = [e for c in containers for e in container_errors(c)]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"] + "-predictor"},
        "spec": {"containers": containers},
    }
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        errors.append(f"pod schema: {e.message}")
    return errors
