"""The KServe InferenceService that serves the exported decoder: a pure builder, create-or-update, a wait until
this spec is rolled out, and the credentials of a request to it.

Two runtimes (`InferenceServiceSpec.runtime`; docs/export-and-serving.md says when to choose which):

- `triton`: `predictor.model` with `modelFormat: onnx`, `runtime: kserve-tritonserver`, `storageUri` = the
  Triton repository root (`<root>/<model>/config.pbtxt`, `<root>/<model>/1/model.onnx`). KServe merges the
  ServingRuntime's container into the predictor key by key (the `kserve-tritonserver` runtime limits CPU to
  1 and memory to 2Gi), so the builder sets both the request and the limit of CPU and memory: a request
  above a limit inherited from the runtime would make an invalid pod.
- `predictor`: a custom predictor, `asymvae serve` on the project's image (kserve v0.16.0
  pkg/apis/serving/v1beta1/predictor_custom.go: the container named `kserve-container` is the predictor,
  its `STORAGE_URI` environment variable its storage URI, its `PROTOCOL` v1 or v2). KServe turns that URI
  into the storage initializer's annotation (pkg/controller/v1beta1/inferenceservice/components/predictor.go,
  `addStorageInitializerAnnotations`), and its pod webhook adds the init container that downloads the
  diffusers export into /mnt/models and mounts that read-only into `kserve-container`
  (pkg/webhook/admission/pod/storage_initializer_injector.go, `InjectStorageInitializer`,
  constants.DefaultModelLocalMountPath). No ServingRuntime is merged: the container's resources are the pod's.
  Knative routes the one declared port (8080, `asymvae serve --http-port`; gRPC is off: Knative routes one
  port) and probes it for readiness, and `asymvae serve` only listens once the model is loaded.

Either way KServe's storage initializer reads the S3 credentials from the Secrets listed by the predictor's
service account (k8s/serving-access), and `predictor.annotations` carries Knative's progress deadline (see
`PROGRESS_DEADLINE`). The tests validate the manifest offline against KServe's CRD (tests/support/crd.py)
and the pod it makes against Kubernetes' Pod schema (tests/support/kserve_runtime.py).

When is a spec rolled out? In KServe's serverless mode (Kubeflow's default) the InferenceService has no
observed generation of its own: KServe copies the Knative Service's (kserve v0.16.0
pkg/apis/serving/v1beta1/inference_service_status.go, `PropagateStatus`), a counter of that Service's own
writes, which KServe also makes when a ServingRuntime changes and restarts at 1 when the Service is made
again. Right after an update KServe even copies the Knative Service's status from before the update
(reconcilers/knative/ksvc_reconciler.go returns the updated object's old status): Ready, on the old
revision. So `wait_ready` asks the predictor's revisions instead: Ready, the latest created revision is
the latest ready one and takes all the traffic, and, when the update changed the spec, it is not the
revision the update replaced (`Applied.replaces`).
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from asymvae.errors import UserError
from asymvae.export.config import check_model_name
from asymvae.extras import require
from asymvae.kube import NO_ISTIO, SERVICE_ACCOUNT_NAMESPACE, KubernetesAPIError, api_message, load_api_client
from asymvae.serving.config import ServeConfig

log = logging.getLogger(__name__)


class DeploymentError(UserError, RuntimeError):
    """An InferenceService could not be applied, or did not become Ready; the message carries KServe's reasons."""


API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
"""Knative's per-revision progress deadline (knative/serving pkg/apis/serving/register.go): how long the
revision's pods may take to become ready (image pull, model download, Triton's start) before Knative fails
the revision. Without it the `progressDeadline` of Knative's config-deployment ConfigMap applies: 600 s on
Kubeflow (kubeflow/manifests common/knative/knative-serving/base/patches/config-deployment.yaml), which a
cold pull of the Triton image can outlast. KServe copies `spec.predictor.annotations` onto the Knative
revision template (pkg/controller/v1beta1/inferenceservice/components/predictor.go)."""
PROGRESS_DEADLINE_S = 1800
"""The deadline set by default: half an hour, for a cold pull of the Triton image (several GB) on a slow link."""
READY_TIMEOUT_S = 2400.0
"""How long the deploy step waits by default for the rollout: longer than `PROGRESS_DEADLINE_S`, so that
Knative's own verdict (the revision failed, and why) comes before the step gives up."""
SERVICE_ACCOUNT_TOKEN = SERVICE_ACCOUNT_NAMESPACE.parent / "token"
"""Where Kubernetes mounts the pod's service-account token (a projected token, which the kubelet rotates)."""
SERVERLESS_MODES = ("Serverless", "Knative")
"""KServe's names of its serverless deployment mode in `status.deploymentMode` (legacy and current)."""
Runtime = Literal["triton", "predictor"]
RUNTIMES = get_args(Runtime)
PREDICTOR_CONTAINER = "kserve-container"
"""The custom predictor's container (kserve v0.16.0 pkg/constants/constants.go `InferenceServiceContainerName`)."""
MODEL_MOUNT = "/mnt/models"
"""Where the storage initializer puts the model in `kserve-container` (constants.go `DefaultModelLocalMountPath`)."""
PREDICTOR_PORT = 8080
"""The port `asymvae serve` listens on in the pod (KServe's default HTTP port, `InferenceServiceDefaultHttpPort`)."""


@dataclass
class InferenceServiceSpec:
    """One deployment of the exported decoder."""

    name: str
    """InferenceService name (a DNS label; KServe derives host names from it, so at most 45 characters)."""
    storage_uri: str
    """triton: the Triton model repository root, e.g. `s3://mlpipeline/v2/artifacts/.../model` (not the model
    folder); predictor: the diffusers export (`asymvae export --format diffusers`)."""
    runtime: Runtime = "triton"
    """`triton`: the ONNX export on KServe's Triton runtime; `predictor`: `asymvae serve` as a custom predictor."""
    image: str = ""
    """predictor: the project's image (`asymvae serve` and the serve extra in it); triton: unused."""
    model_name: str = ServeConfig.name
    """predictor: the model's name in the v2 routes (`asymvae serve --name`); triton: the repository names it."""
    namespace: str = "asymvae"
    """Namespace to deploy into (where the S3 Secret and service account live; the deploy step passes its own)."""
    service_account: str | None = "asymvae-serving"
    """Predictor service account listing the S3 Secret (k8s/serving-access); None: the namespace default."""
    serving_runtime: str = "kserve-tritonserver"
    """triton: the KServe ServingRuntime."""
    model_format: str = "onnx"
    """triton: `modelFormat.name` (the export is ONNX under Triton)."""
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
    progress_deadline_s: int = PROGRESS_DEADLINE_S
    """Seconds Knative gives the predictor's pods to become ready before it fails the revision (`PROGRESS_DEADLINE`;
    Kubeflow's default, 600 s, can be shorter than a cold pull of the Triton image)."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.runtime == "predictor" and not self.image:
            raise ValueError("runtime predictor needs the image that runs `asymvae serve`: set image")
        check_model_name(self.model_name)  # a bad name fails here, not in the pod
        if not _DNS_LABEL.match(self.name) or len(self.name) > 45:
            raise ValueError(f"name {self.name!r} must be a DNS label of at most 45 characters (a-z, 0-9, -)")
        if not self.storage_uri.startswith(("s3://", "gs://", "pvc://", "https://", "http://")):
            raise ValueError(
                f"storage_uri {self.storage_uri!r} is not a location KServe can download from (s3://, gs://, pvc://)"
            )
        if self.gpus < 0 or self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError("gpus and min_replicas must be >= 0 and max_replicas >= max(1, min_replicas)")
        if self.progress_deadline_s < 1:
            raise ValueError(f"progress_deadline_s must be at least 1 second, got {self.progress_deadline_s}")


def _double(quantity: str) -> str:
    number = re.match(r"^(\d+)(.*)$", quantity)
    return f"{2 * int(number.group(1))}{number.group(2)}" if number else quantity


def build_inferenceservice(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The InferenceService manifest for `spec` (pure)."""
    limits: dict[str, Any] = {"cpu": spec.cpu, "memory": _double(spec.memory)}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    resources = {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits}
    predictor: dict[str, Any] = {}
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        predictor["tolerations"] = [dict(t) for t in spec.tolerations]
    predictor["annotations"] = {PROGRESS_DEADLINE: f"{spec.progress_deadline_s}s"}
    predictor.update(minReplicas=spec.min_replicas, maxReplicas=spec.max_replicas)
    if spec.runtime == "triton":
        predictor["model"] = {
            "modelFormat": {"name": spec.model_format},
            "runtime": spec.serving_runtime,
            "protocolVersion": "v2",
            "storageUri": spec.storage_uri,
            "resources": resources,
        }
    else:
        predictor["containers"] = [_predictor_container(spec, resources)]
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


def _predictor_container(spec: InferenceServiceSpec, resources: dict[str, Any]) -> dict[str, Any]:
    """`kserve-container` of the custom predictor: `asymvae serve` on the model the storage initializer fetched."""
    return {
        "name": PREDICTOR_CONTAINER,
        "image": spec.image,
        "command": ["asymvae"],
        "args": [
            "serve",
            MODEL_MOUNT,
            "--name",
            spec.model_name,
            "--http-port",
            str(PREDICTOR_PORT),
            "--grpc-port",
            "0",
        ],
        "env": [
            {"name": "STORAGE_URI", "value": spec.storage_uri},
            {"name": "PROTOCOL", "value": "v2"},
        ],
        "ports": [{"name": "http1", "containerPort": PREDICTOR_PORT, "protocol": "TCP"}],
        "resources": resources,
    }


def storage_uri(isvc: dict[str, Any]) -> str:
    """Where an InferenceService's predictor takes its model from: `predictor.model.storageUri` (a runtime such
    as Triton's), or the `STORAGE_URI` of a custom predictor's `kserve-container` (kserve v0.16.0
    predictor_custom.go, `GetStorageUri`); empty when it names neither."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    if "model" in predictor:
        return str(predictor["model"].get("storageUri", ""))
    for container in predictor.get("containers") or []:
        if container.get("name") == PREDICTOR_CONTAINER:
            return next((e.get("value", "") for e in container.get("env") or [] if e.get("name") == "STORAGE_URI"), "")
    return ""


def _custom(api_client: Any) -> Any:
    k8s = require("kubernetes.client", "kubeflow", "deploying an InferenceService")
    if api_client is None:
        api_client = load_api_client()
    return k8s.CustomObjectsApi(api_client)


REQUEST_TIMEOUT_S = 30.0
"""Timeout of each Kubernetes API request (connect and each read), as the training job runner's."""


def read_inferenceservice(name: str, namespace: str, api_client: Any = None) -> dict[str, Any] | None:
    """The InferenceService `namespace/name` as the API server has it, or None when there is none. Raises
    asymvae.kube.KubernetesAPIError when the API server refuses the read."""
    ApiException = require("kubernetes.client.rest", "kubeflow", "reading an InferenceService").ApiException
    try:
        return _custom(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise KubernetesAPIError(
            f"could not read InferenceService {namespace}/{name}: HTTP {e.status} {e.reason}. {api_message(e)}"
        ) from e


@dataclass
class Applied:
    """What `apply_inferenceservice` did, and which revision the rollout of its spec replaces."""

    action: str
    """`created` or `updated`."""
    replaces: str = ""
    """The predictor's latest revision before an update that changed the spec: the rollout of the new spec
    is a newer one. Empty when no rollout must replace one: a new service, an update that left the spec as
    it was (the API server then keeps the generation), or a service that never had a revision."""


def apply_inferenceservice(obj: dict[str, Any], api_client: Any = None) -> Applied:
    """Create the InferenceService, or replace the spec of an existing one of that name. Raises
    asymvae.kube.KubernetesAPIError when the API server refuses."""
    ApiException = require("kubernetes.client.rest", "kubeflow", "deploying an InferenceService").ApiException

    custom = _custom(api_client)
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj, _request_timeout=REQUEST_TIMEOUT_S)
        log.info("created InferenceService %s/%s", ns, name)
        return Applied("created")
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
        written = custom.replace_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, body, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as e:
        raise KubernetesAPIError(
            f"could not update InferenceService {ns}/{name}: HTTP {e.status} {e.reason}. {api_message(e)}"
        ) from e
    changed = written["metadata"].get("generation") != existing["metadata"].get("generation")
    replaces = _predictor(existing).get("latestCreatedRevision", "") if changed else ""
    log.info("updated InferenceService %s/%s (%s)", ns, name, f"replacing {replaces}" if replaces else "no new rollout")
    return Applied("updated", replaces)


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor's part of the status (its Knative revisions and traffic)."""
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def _condition(isvc: dict[str, Any], kind: str) -> str:
    """The status (`True`, `False`, `Unknown`) of the condition `kind`; `Unknown` when it is absent."""
    for c in (isvc.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return "Unknown"


def _ready(isvc: dict[str, Any], replaces: str = "") -> bool:
    """This spec is rolled out and serving: Ready, the predictor's latest created revision is its latest ready
    one, takes all the traffic, and is not `replaces` (the revision an update of the spec supersedes)."""
    predictor = _predictor(isvc)
    latest = predictor.get("latestCreatedRevision", "")
    routed = any(t.get("revisionName") == latest and t.get("percent") == 100 for t in predictor.get("traffic") or [])
    return (
        _condition(isvc, "Ready") == "True"
        and bool(latest)
        and latest == predictor.get("latestReadyRevision")
        and latest != replaces
        and routed
    )


def _not_ready_reasons(isvc: dict[str, Any], replaces: str = "") -> str:
    conds = [c for c in (isvc.get("status") or {}).get("conditions") or [] if str(c.get("status")) != "True"]
    reasons = [f"{c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".strip() for c in conds]
    predictor = _predictor(isvc)
    latest, ready = predictor.get("latestCreatedRevision", ""), predictor.get("latestReadyRevision", "")
    if replaces and latest == replaces:
        reasons.append(f"no revision has replaced {replaces} since the update")
    elif latest and latest != ready:
        reasons.append(f"revision {latest} is not ready (serving: {ready or 'none'})")
    return "; ".join(reasons) or "no status yet (is KServe running, and the runtime installed?)"


def wait_ready(
    name: str,
    namespace: str,
    timeout_s: float = READY_TIMEOUT_S,
    poll_s: float = 10.0,
    api_client: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    replaces: str = "",
) -> dict[str, Any]:
    """Poll the InferenceService until its spec is rolled out and Ready (`_ready`; `replaces` from
    `Applied`); returns its status (with `address.url`). Raises DeploymentError with KServe's reasons when
    that does not happen within `timeout_s`, and at once when the service is not in KServe's serverless mode
    (its status then has no revisions to tell a rollout by)."""
    ApiException = require("kubernetes.client.rest", "kubeflow", "deploying an InferenceService").ApiException

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
        mode = (isvc.get("status") or {}).get("deploymentMode")
        if mode and mode not in SERVERLESS_MODES:
            raise DeploymentError(
                f"InferenceService {namespace}/{name} runs in KServe's {mode} deployment mode; the deploy step "
                "tells a finished rollout by its Knative revisions. Fix: deploy on a KServe whose "
                "defaultDeploymentMode is Serverless (Kubeflow's default)"
            )
        if isvc and _ready(isvc, replaces):
            log.info("InferenceService %s/%s is Ready (%s)", namespace, name, _predictor(isvc)["latestReadyRevision"])
            return isvc["status"]
        remaining = deadline - clock()
        if remaining <= 0:
            raise DeploymentError(
                f"InferenceService {namespace}/{name} was not Ready within {timeout_s:g} s: "
                f"{_not_ready_reasons(isvc, replaces)}."
                f" Inspect it with: kubectl -n {namespace} describe inferenceservice {name}"
            )
        sleep(min(poll_s, remaining))


def cluster_local_auth(
    url: str, name: str, namespace: str, token_file: str | Path = SERVICE_ACCOUNT_TOKEN
) -> dict[str, str]:
    """`Authorization: Bearer <the pod's service-account token>` for a request to the InferenceService's own
    cluster-local address, `<name>[-predictor].<namespace>.svc[.cluster.local]` (KServe's
    `status.address.url`), where Kubeflow's machine-to-machine auth overlay refuses a request without a
    Kubernetes token (kubeflow/manifests common/istio/cluster-local-gateway/overlays/m2m-auth). No header for
    any other host, nor without the token file (outside a pod). The file is read at each call: the kubelet
    rotates projected tokens. Raises DeploymentError when the file exists but cannot be read."""
    hosts = {f"{n}.{namespace}.svc{domain}" for n in (name, f"{name}-predictor") for domain in ("", ".cluster.local")}
    if urllib.parse.urlsplit(url).hostname not in hosts:
        return {}
    path = Path(token_file)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise DeploymentError(
            f"cannot read the service-account token {path}: {e.strerror}. Fix: mount the pod's token there "
            "(automountServiceAccountToken), or point token_file at it"
        ) from e
    return {"Authorization": f"Bearer {token}"} if token else {}
