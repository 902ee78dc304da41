"""Which custom resources the cluster serves, from its API discovery (`GET /apis/GROUP/VERSION`).

A custom resource exists only once its CustomResourceDefinition is installed: the API server then lists its
plural in the group version's discovery document, and answers 404 for a group version that no CRD serves.
Discovery is open to every authenticated user (Kubernetes binds the `system:discovery` ClusterRole to
`system:authenticated`), so the run's service account can ask before it creates anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asymvae.extras import require

if TYPE_CHECKING:
    from kubernetes import client as k8s


def served_resources(custom: k8s.CustomObjectsApi, group: str, version: str, timeout_s: float) -> frozenset[str]:
    """The resources (plurals) the API server serves in `group`/`version`; empty when it serves none there
    (HTTP 404). Subresources (`trainjobs/status`) are left out. Other errors propagate (ApiException, urllib3's
    HTTPError)."""
    rest = require("kubernetes.client.rest", "kubeflow", "asking a cluster which custom resources it serves")
    try:
        found = custom.get_api_resources(group, version, _request_timeout=timeout_s)
    except rest.ApiException as e:
        if e.status == 404:
            return frozenset()
        raise
    return frozenset(r.name for r in found.resources or [] if "/" not in r.name)
