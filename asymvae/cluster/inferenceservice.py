"""The KServe InferenceService that serves the Triton export, as data (pure builder) plus create-or-update.

`predictor.model`: `modelFormat: onnx`, `runtime: kserve-tritonserver`, `storageUri` = the Triton
repository root (`<root>/<model>/config.pbtxt`, `<root>/<model>/1/model.onnx`). KServe's storage
initializer reads the S3 credentials from the Secrets listed by the predictor's service account
(k8s/serving). Validate the manifest offline with asymvae.cluster.crd.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class InferenceServiceSpec:
    """One Triton deployment of the exported decoder."""

    name: str
    """InferenceService name (a DNS label; KServe derives host names from it, so at most 45 characters)."""
    storage_uri: str
    """Triton model repository root, e.g. `s3://mlpipeline/v2/artifacts/.../model` (not the model folder)."""
    namespace: str = "asymvae"
    """Namespace to deploy into (where the S3 Secret and service account live)."""
    service_account: str | None = "asymvae-serving"
    """Predictor service account listing the S3 Secret (k8s/serving); None: the namespace default."""
    runtime: str = "kserve-tritonserver"
    """KServe ServingRuntime."""
    model_format: str = "onnx"
    """`modelFormat.name` (the export is ONNX under Triton)."""
    gpus: int = 1
    """`nvidia.com/gpu` limit (0: CPU serving)."""
    cpu: str = "2"
    """CPU request."""
    memory: str = "8Gi"
    """Memory request (the limit is twice this)."""
    min_replicas: int = 1
    """Replicas kept running (0 lets Knative scale to zero)."""
    max_replicas: int = 1
    """Most replicas under load."""

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name) or len(self.name) > 45:
            raise ValueError(f"name {self.name!r} must be a DNS label of at most 45 characters (a-z, 0-9, -)")
        if not self.storage_uri.startswith(("s3://", "gs://", "pvc://", "https://", "http://")):
            raise ValueError(
                f"storage_uri {self.storage_uri!r} is not a location KServe can download from (s3://, gs://, pvc://)"
            )
        if self.gpus < 0 or self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError("gpus and min_replicas must be >= 0 and max_replicas >= max(1, min_replicas)")


def _double(quantity: str) -> str:
    number = re.match(r"^(\d+)(.*)$", quantity)
    return f"{2 * int(number.group(1))}{number.group(2)}" if number else quantity


def build_inferenceservice(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The InferenceService manifest for `spec` (pure)."""
    limits: dict[str, Any] = {"memory": _double(spec.memory)}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    predictor: dict[str, Any] = {
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "model": {
            "modelFormat": {"name": spec.model_format},
            "runtime": spec.runtime,
            "protocolVersion": "v2",
            "storageUri": spec.storage_uri,
            "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        },
    }
    if spec.service_account:
        predictor = {"serviceAccountName": spec.service_account, **predictor}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/name": "asymvae", "app.kubernetes.io/component": "serving"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {"predictor": predictor},
    }


def apply_inferenceservice(obj: dict[str, Any], api_client: Any = None) -> str:
    """Create the InferenceService, or replace the spec of an existing one of that name; returns
    `created` or `updated`. Raises asymvae.cluster.errors.KubernetesAPIError when the API server refuses."""
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    from asymvae.cluster.errors import KubernetesAPIError

    if api_client is None:
        from asymvae.cluster.runner import load_api_client

        api_client = load_api_client()
    custom = k8s.CustomObjectsApi(api_client)
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        log.info("created InferenceService %s/%s", ns, name)
        return "created"
    except ApiException as e:
        if e.status != 409:
            raise KubernetesAPIError(
                f"could not create InferenceService {ns}/{name}: HTTP {e.status} {e.reason}"
            ) from e
    try:
        existing = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}}
        custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)
    except ApiException as e:
        raise KubernetesAPIError(f"could not update InferenceService {ns}/{name}: HTTP {e.status} {e.reason}") from e
    log.info("updated InferenceService %s/%s", ns, name)
    return "updated"
