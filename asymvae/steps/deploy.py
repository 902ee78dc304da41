"""The deploy step: serve the export with KServe, wait until it is Ready, and prove it answers.

`runtime`: `triton` serves the Triton export on KServe's Triton runtime; `predictor` serves the diffusers
export with `asymvae serve` on the project's image (`image`, by default the step's own: ASYMVAE_IMAGE) as a
custom predictor (asymvae.serving.inferenceservice). The InferenceService goes to the step's own namespace
(downward API) unless one is given; once this spec is rolled out and Ready (`wait_ready`: the revision
serving it is the new one, not the one before the update), the step sends one v2 inference (latent, image,
mask, shaped from the Triton export's config.pbtxt, or from the predictor's own metadata,
`GET /v2/models/<name>`) to the service's cluster-local address, with the pod's service-account token
(Kubeflow's machine-to-machine auth refuses a request there without one; no other host ever gets it), and
checks that a finite image of the right shape comes back. Any of that failing fails the step: a run is never
green with a service that cannot answer.

First the deploy gate (asymvae.serving.gate) decides: an export that does not beat the one being served, on
the same held-out evaluation, is not deployed; the cluster is left as it is and the step succeeds, `kept`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymvae.cluster.jobspec import gpu_tolerations
from asymvae.cluster.pod import IMAGE_ENV, resolve_namespace
from asymvae.serving.client import InferenceCheck, ModelIO, ServingError, check_inference, fetch_model_io
from asymvae.serving.gate import GateSettings, Verdict, check_gate
from asymvae.serving.inferenceservice import (
    PROGRESS_DEADLINE_S,
    READY_TIMEOUT_S,
    RUNTIMES,
    SERVICE_ACCOUNT_TOKEN,
    DeploymentError,
    InferenceServiceSpec,
    apply_inferenceservice,
    build_inferenceservice,
    cluster_local_auth,
    wait_ready,
)

log = logging.getLogger(__name__)


@dataclass
class DeployStepConfig:
    """Where and how the decoder is served, and how it is checked."""

    name: str = "asymvae-decoder"
    """InferenceService name."""
    runtime: str = "triton"
    """`triton`: the Triton export (ONNX, fixed sizes) on KServe's Triton runtime; `predictor`: the diffusers
    export served by `asymvae serve` (any size, tiled decoding of large images) as a KServe custom predictor."""
    image: str = ""
    """runtime=predictor: the image that runs `asymvae serve`; empty: the deploy step's own image."""
    namespace: str = ""
    """Namespace; empty: the step's own (its pod's)."""
    service_account: str = "asymvae-serving"
    """Predictor service account listing the S3 Secret (k8s/serving-access); empty: the namespace default."""
    gpus: int = 1
    """GPUs per replica (0: CPU)."""
    cpu: str = "2"
    """CPU request and limit per replica."""
    memory: str = "8Gi"
    """Memory request per replica (the limit is twice this)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the predictor pods must match."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Taints the predictor tolerates besides the `nvidia.com/gpu` taint (tolerated when it has GPUs)."""
    progress_deadline_s: int = PROGRESS_DEADLINE_S
    """Seconds Knative gives a new revision's pods to become ready (image pull, model download, Triton's start)
    before it fails the revision; set on the InferenceService as `serving.knative.dev/progress-deadline`."""
    ready_timeout_s: float = READY_TIMEOUT_S
    """How long to wait for the rollout; longer than `progress_deadline_s`, so Knative's verdict comes first."""
    poll_s: float = 10.0
    """Seconds between status reads."""
    check_size: int = 64
    """Side in pixels of the test request's image (a multiple of 8)."""
    token_file: str = str(SERVICE_ACCOUNT_TOKEN)
    """The pod's service-account token, sent as a bearer token with the check to the service's own
    cluster-local address only; no file (outside a pod): no token."""
    gate: str = "on"
    """Deploy gate: `on` deploys only an export that beats the serving one on the same held-out evaluation
    (its evaluation.json; a first deploy must beat the baseline VAE); `off` always deploys."""
    min_improvement: float = 0.0
    """Relative drop of the masked pre_error the new export needs over the serving one (0.01: 1% lower)."""
    first_deploy_max_ratio: float = 1.0
    """First deploy: the new export's masked pre_error must be below this times the baseline VAE's."""

    def __post_init__(self) -> None:
        self.gate_settings()  # refuses bad gate settings before anything runs
        if self.runtime not in RUNTIMES:
            raise DeploymentError(f"runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.ready_timeout_s <= self.progress_deadline_s:
            raise DeploymentError(
                f"ready_timeout_s ({self.ready_timeout_s:g} s) must exceed progress_deadline_s "
                f"({self.progress_deadline_s} s): the step would give up while Knative still waits for the pods. "
                "Fix: raise ready_timeout_s or lower progress_deadline_s"
            )

    def gate_settings(self) -> GateSettings:
        """The deploy gate's settings (GateError when they cannot be used)."""
        return GateSettings(self.gate, self.min_improvement, self.first_deploy_max_ratio)


@dataclass
class Deployment:
    """What the step did."""

    manifest: dict[str, Any]
    action: str
    """`created`, `updated`, or `kept` (the gate kept the serving export; the manifest was not applied)."""
    url: str
    """The service's cluster-local base URL (requests go to `<url>/v2/models/<model>/infer`); empty when kept."""
    model: str
    """The model's name in the v2 routes (Triton's: its folder in the repository)."""
    check: InferenceCheck | None
    """The check of one inference; None when kept."""
    revision: str
    """The Knative revision that serves the spec and answered the check; empty when kept."""
    verdict: Verdict
    """The deploy gate's verdict."""


def triton_model_dir(repository: str | Path) -> Path:
    """The one model folder (`<name>/config.pbtxt`) of a Triton repository root."""
    found = sorted(p.parent for p in Path(repository).glob("*/config.pbtxt"))
    if len(found) != 1:
        raise ServingError(f"{repository} should hold one Triton model (<name>/config.pbtxt), found {len(found)}")
    return found[0]


def predictor_image(cfg: DeployStepConfig) -> str:
    """The predictor's image: `image`, else the step's own (ASYMVAE_IMAGE); DeploymentError when neither is known."""
    found = cfg.image or os.environ.get(IMAGE_ENV, "")
    if not found:
        raise DeploymentError(
            f"runtime=predictor needs the image that runs `asymvae serve`: set `image` (or {IMAGE_ENV}, which the "
            "pipeline sets to the step's own image)"
        )
    return found


def deploy_step(cfg: DeployStepConfig, repository: str, storage_uri: str, api_client: Any = None) -> Deployment:
    """Serve the export at `storage_uri` (whose local copy is `repository`: the Triton repository for
    runtime=triton, the diffusers export for runtime=predictor), wait until Ready, check one inference;
    unless the deploy gate keeps the serving export (action `kept`, nothing applied). Raises
    DeploymentError / ServingError / KubernetesAPIError when any of it fails."""
    triton = cfg.runtime == "triton"
    io = ModelIO.from_triton_config(triton_model_dir(repository)) if triton else None
    tolerations = [t.to_dict() for t in gpu_tolerations()] if cfg.gpus else []
    spec = InferenceServiceSpec(
        name=cfg.name,
        storage_uri=storage_uri,
        runtime="triton" if triton else "predictor",
        image="" if triton else predictor_image(cfg),
        namespace=resolve_namespace(cfg.namespace),
        service_account=cfg.service_account or None,
        gpus=cfg.gpus,
        cpu=cfg.cpu,
        memory=cfg.memory,
        node_selector=dict(cfg.node_selector),
        tolerations=tolerations + list(cfg.tolerations),
        progress_deadline_s=cfg.progress_deadline_s,
    )
    manifest = build_inferenceservice(spec)
    verdict = check_gate(cfg.gate_settings(), spec.name, spec.namespace, repository, storage_uri, api_client)
    if not verdict.deploy:
        log.info("kept the serving export of %s/%s: nothing applied", spec.namespace, spec.name)
        return Deployment(manifest, "kept", "", io.model if io else spec.model_name, None, "", verdict)
    applied = apply_inferenceservice(manifest, api_client)
    status = wait_ready(
        spec.name, spec.namespace, cfg.ready_timeout_s, cfg.poll_s, api_client, replaces=applied.replaces
    )
    url = (status.get("address") or {}).get("url") or status.get("url")
    if not url:
        raise ServingError(f"InferenceService {spec.namespace}/{spec.name} is Ready but reports no address")
    headers = cluster_local_auth(url, spec.name, spec.namespace, cfg.token_file)
    if io is None:  # the predictor's tensors (any size: -1), as it reports them
        io = fetch_model_io(url, spec.model_name, headers)
    check = check_inference(url, io, cfg.check_size, cfg.check_size, headers=headers)
    token = "with the pod's service-account token" if headers else "without a token"
    log.info("%s answered in %.3f s (%s): sample %s", url, check.seconds, token, check.output_shape)
    revision = status["components"]["predictor"]["latestReadyRevision"]
    return Deployment(manifest, applied.action, url, io.model, check, revision, verdict)
