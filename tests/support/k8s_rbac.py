"""The rights a pipeline run's account holds, for the API stand-in to enforce.

In a Kubeflow profile the run's pods act as `default-editor`, which the profile controller binds to the
ClusterRole `kubeflow-edit` (kubeflow/dashboard components/profile-controller/controllers/profile_controller.go,
`updateServiceAccount(instance, DEFAULT_EDITOR, kubeflowEdit)`), and the profile's owner holds `kubeflow-admin`
(RoleBinding `namespaceAdmin`). Both are aggregated ClusterRoles: their rules are those of every ClusterRole
labelled `rbac.authorization.kubeflow.org/aggregate-to-kubeflow-<name>`, recursively. The labelled roles are
copied unchanged from kubeflow/manifests 26.03 into tests/schemas/rbac (see its README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBEFLOW_ROLES = REPO / "tests" / "schemas" / "rbac"
AGGREGATE = "rbac.authorization.kubeflow.org/aggregate-to-"


STOCK = ("kubeflow-roles.yaml", "kubeflow-trainer-roles.yaml", "kserve-aggregated-roles.yaml")
"""The role files of a stock install of Kubeflow 26.03 (example/kustomization.yaml): no training operator."""
WITH_TRAINING_OPERATOR = (*STOCK, "kubeflow-training-roles.yaml")
"""A platform with the training operator v1 installed too (its roles aggregate into kubeflow-edit)."""


def _cluster_roles(files: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    roles = {}
    for path in (KUBEFLOW_ROLES / f for f in files):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ClusterRole":
                roles[doc["metadata"]["name"]] = doc
    return roles


def kubeflow_role_rules(name: str, files: tuple[str, ...] = STOCK) -> list[dict[str, Any]]:
    """The rules of the aggregated ClusterRole `name` (`kubeflow-edit`, `kubeflow-admin`, ...) on a platform
    with the role `files` installed, as the API server's aggregation controller fills them."""
    roles = _cluster_roles(files)
    rules: list[dict[str, Any]] = []
    seen: set[str] = set()

    def collect(role: str) -> None:
        if role in seen:
            return
        seen.add(role)
        rules.extend(roles[role].get("rules") or [])
        label = f"{AGGREGATE}{role}"
        for other, doc in roles.items():
            if (doc["metadata"].get("labels") or {}).get(label) == "true":
                collect(other)

    collect(name)
    return rules


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    """Whether RBAC `rules` allow `verb` on `resource` of API group `group`."""
    return any(
        (group in r.get("apiGroups", []) or "*" in r.get("apiGroups", []))
        and (resource in r.get("resources", []) or "*" in r.get("resources", []))
        and (verb in r.get("verbs", []) or "*" in r.get("verbs", []))
        for r in rules
    )
