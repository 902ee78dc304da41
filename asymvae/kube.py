"""Kubernetes API helpers shared by the training jobs (`asymvae.cluster`) and serving (`asymvae.serving`): the API
client, the API server's own error message, the refusal error, and the pod conventions both rely on.

The kubernetes package is imported only inside the functions that talk to an API server, so the pure
manifest builders that use the constants here never load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from asymvae.errors import UserError
from asymvae.extras import require

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.client.rest import ApiException

NO_ISTIO = {"sidecar.istio.io/inject": "false"}
"""Pod annotation: an Istio sidecar (Kubeflow profile namespaces inject one) would keep finished pods running."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Where Kubernetes mounts the namespace of the pod's service account (the pod's namespace)."""


class KubernetesAPIError(UserError, RuntimeError):
    """The API server refused a request (permissions, missing CRD, invalid object)."""


def load_api_client() -> ApiClient:
    """An API client from the pod's service account, else from ~/.kube/config (or $KUBECONFIG)."""
    client = require("kubernetes.client", "kubeflow", "talking to a Kubernetes API server")
    config = require("kubernetes.config", "kubeflow", "talking to a Kubernetes API server")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def api_message(e: ApiException, limit: int | None = 500) -> str:
    """The API server's own message from an error response (its Status object's `message`), shortened to
    `limit` characters (None: whole)."""
    body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else (e.body or "")
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    text = found.get("message", body) if isinstance(found, dict) else body
    return str(text).strip()[:limit]
