"""The KServe InferenceService that serves the Triton export: a pure builder, create-or-update, and a wait for
Ready.

`predictor.model`: `modelFormat: onnx`, `runtime: kserve-tritonserver`, `storageUri` = the Triton
repository root (`<root>/<model>/config.pbtxt`, `<root>/<model>/1/model.onnx`). KServe's storage
initializer reads the S3 credentials from the Secrets listed by the predictor's service account
(k8s/serving-access). KServe merges the ServingRuntime's container into the predictor key by key (the
`kserve-tritonserver` runtime limits CPU to 1 and memory to 2Gi), so the builder sets both the request and
the limit of CPU and memory: a request above a limit inherited from the runtime would make an invalid pod.
Validate the manifest offline with asymvae.cluster.crd.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asymvae.cluster.jobspec import NO_ISTIO

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
    """Namespace to deploy into (where the S3 Secret and service account live; the deploy step passes its own)."""
    service_account: str | None = "asymvae-serving"
    """Predictor service account listing the S3 Secret (k8s/serving-access); None: the namespace default."""
    runtime: str = "kserve-tritonserver"
    """KServe ServingRuntime."""
    model_format: str = "onnx"
    """`modelFormat.name` (the export is ONNX under Triton)."""
    gpus: int = 1
    """`nvidia.com/gpu` limit (0: CPU serving)."""
    cpu: str = "2"
    """CPU request and limit."""
    memory: str = "8Gi"
    """Memory request (the limit is twice this)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the predictor pods must match (e.g. a GPU product)."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Taints the predictor pods tolerate, in Kubernetes' form."""
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
    limits: dict[str, Any] = {"cpu": spec.cpu, "memory": _double(spec.memory)}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    predictor: dict[str, Any] = {}
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        predictor["tolerations"] = [dict(t) for t in spec.tolerations]
    predictor.update(
        minReplicas=spec.min_replicas,
        maxReplicas=spec.max_replicas,
        model={
            "modelFormat": {"name": spec.model_format},
            "runtime": spec.runtime,
            "protocolVersion": "v2",
            "storageUri": spec.storage_uri,
            "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        },
    )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/name": "asymvae", "app.kubernetes.io/component": "serving"},
            "annotations": dict(NO_ISTIO),
        },
        "spec": {"predictor": predictor},
    }


def _custom(api_client: Any) -> Any:
    from kubernetes import client as k8s

    if api_client is None:
        from asymvae.cluster.runner import load_api_client

        api_client = load_api_client()
    return k8s.CustomObjectsApi(api_client)


REQUEST_TIMEOUT_S = 30.0
"""Timeout of each Kubernetes API request (connect and each read), as the training job runner's."""


def apply_inferenceservice(obj: dict[str, Any], api_client: Any = None) -> str:
    """Create the InferenceService, or replace the spec of an existing one of that name; returns
    `created` or `updated`. Raises asymvae.cluster.errors.KubernetesAPIError when the API server refuses."""
    from kubernetes.client.rest import ApiException

    from asymvae.cluster.errors import KubernetesAPIError
    from asymvae.cluster.runner import api_message

    custom = _custom(api_client)
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj, _request_timeout=REQUEST_TIMEOUT_S)
        log.info("created InferenceService %s/%s", ns, name)
        return "created"
    except ApiException as e:
        if e.status != 409:
            raise KubernetesAPIError(
                f"could not create InferenceService {ns}/{name}: HTTP {e.status} {e.reason}. {api_message(e)}"
            ) from e
    try:
        existing = custom.get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
        )
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}}
        custom.replace_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, body, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as e:
        raise KubernetesAPIError(
            f"could not update InferenceService {ns}/{name}: HTTP {e.status} {e.reason}. {api_message(e)}"
        ) from e
    log.info("updated InferenceService %s/%s", ns, name)
    return "updated"


def _ready(isvc: dict[str, Any]) -> bool:
    """Ready holds, for the current spec (a just-updated service may still report its old revision's Ready)."""
    status = isvc.get("status") or {}
    generation = (isvc.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    current = generation is None or observed is None or observed >= generation
    ready = any(c.get("type") == "Ready" and str(c.get("status")) == "True" for c in status.get("conditions") or [])
    return ready and current


def _not_ready_reasons(isvc: dict[str, Any]) -> str:
    conds = [c for c in (isvc.get("status") or {}).get("conditions") or [] if str(c.get("status")) != "True"]
    return "; ".join(f"{c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".strip() for c in conds) or (
        "no status yet (is KServe running, and the runtime installed?)"
    )


def wait_ready(
    name: str,
    namespace: str,
    timeout_s: float = 900.0,
    poll_s: float = 10.0,
    api_client: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the InferenceService until its Ready condition holds; returns its status (with `address.url`).
    Raises DeploymentError with KServe's reasons when it is not Ready within `timeout_s`."""
    from kubernetes.client.rest import ApiException

    from asymvae.cluster.errors import DeploymentError
    from asymvae.cluster.runner import api_message

    custom = _custom(api_client)
    deadline = clock() + timeout_s
    isvc: dict[str, Any] = {}
    while True:
        try:
            isvc = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as e:
            if e.status in (401, 403, 404):
                raise DeploymentError(f"could not read InferenceService {namespace}/{name}: {api_message(e)}") from e
            log.warning("reading InferenceService %s/%s failed (HTTP %s); retrying", namespace, name, e.status)
        if isvc and _ready(isvc):
            log.info("InferenceService %s/%s is Ready", namespace, name)
            return isvc["status"]
        remaining = deadline - clock()
        if remaining <= 0:
            raise DeploymentError(
                f"InferenceService {namespace}/{name} was not Ready within {timeout_s:g} s: {_not_ready_reasons(isvc)}."
                f" Inspect it with: kubectl -n {namespace} describe inferenceservice {name}"
            )
        sleep(min(poll_s, remaining))
