"""deploy: serve a Triton export with KServe, wait until it is Ready, and check that it answers."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    exported: Input[Model],
    manifest: Output[Artifact],
    name: str = "asymvae-decoder",
    namespace: str = "",
    service_account: str = "asymvae-serving",
    gpus: int = 1,
    cpu: str = "2",
    memory: str = "8Gi",
    node_selector: Optional[dict] = None,  # noqa: UP045 - KFP reads the annotation; it predates X | None
    tolerations: Optional[list] = None,  # noqa: UP045
    ready_timeout_s: float = 2400.0,
    check_size: int = 64,
) -> str:
    """Apply a KServe InferenceService whose `storageUri` is `exported` (a Triton repository in the object store),
    wait for Ready, then send one v2 inference (latent, image, mask) and check the decoded image's shape.

    Args:
        exported: Output of the export component with format `triton`.
        manifest: The InferenceService applied (YAML); metadata: its URL, the Triton model name, the check.
        name: InferenceService name.
        namespace: Namespace (holding the S3 Secret and `service_account`, see k8s/serving-access); empty:
            this step's own.
        service_account: Predictor service account listing the S3 Secret.
        gpus: GPUs per predictor replica (0: CPU).
        cpu: CPU request and limit per replica.
        memory: Memory request per replica (the limit is twice this).
        node_selector: Node labels the predictor pods must match.
        tolerations: Taints the predictor tolerates (Kubernetes' form) besides `nvidia.com/gpu`, which it
            tolerates when `gpus` > 0.
        ready_timeout_s: How long to wait for the service to be Ready; more than Knative's progress deadline
            the step sets (1800 s), so that Knative's verdict comes first.
        check_size: Side in pixels of the test inference's image.

    Returns:
        `created` or `updated`.
    """
    from pathlib import Path

    import yaml

    from asymvae.steps.deploy import DeployStepConfig, deploy_step
    from asymvae.steps.uris import store_uri

    cfg = DeployStepConfig(
        name=name,
        namespace=namespace,
        service_account=service_account,
        gpus=gpus,
        cpu=cpu,
        memory=memory,
        node_selector=dict(node_selector or {}),
        tolerations=list(tolerations or []),
        ready_timeout_s=ready_timeout_s,
        check_size=check_size,
    )
    done = deploy_step(cfg, exported.path, store_uri(exported.uri))
    Path(manifest.path).write_text(yaml.safe_dump(done.manifest, sort_keys=False))
    manifest.metadata.update(
        {
            "name": name,
            "namespace": done.manifest["metadata"]["namespace"],
            "storage_uri": done.manifest["spec"]["predictor"]["model"]["storageUri"],
            "action": done.action,
            "url": done.url,
            "model": done.model,
            "infer_route": f"/v2/models/{done.model}/infer",
            "output_shape": done.check.output_shape,
            "seconds": done.check.seconds,
        }
    )
    return done.action
