"""deploy: serve a Triton export with KServe (create or update an InferenceService)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    exported: Input[Model],
    manifest: Output[Artifact],
    name: str = "asymvae-decoder",
    namespace: str = "asymvae",
    service_account: str = "asymvae-serving",
    gpus: int = 1,
) -> str:
    """Apply a KServe InferenceService whose `storageUri` is `exported` (a Triton repository in the object store).

    Args:
        exported: Output of the export component with format `triton`.
        manifest: The InferenceService applied (YAML).
        name: InferenceService name.
        namespace: Namespace (holding the S3 Secret and `service_account`, see k8s/serving).
        service_account: Predictor service account listing the S3 Secret.
        gpus: GPUs per predictor replica (0: CPU).

    Returns:
        `created` or `updated`.
    """
    from pathlib import Path

    import yaml

    from asymvae.cluster.inferenceservice import InferenceServiceSpec, apply_inferenceservice, build_inferenceservice
    from asymvae.steps.uris import store_uri

    spec = InferenceServiceSpec(
        name=name,
        storage_uri=store_uri(exported.uri),
        namespace=namespace,
        service_account=service_account or None,
        gpus=gpus,
    )
    obj = build_inferenceservice(spec)
    Path(manifest.path).write_text(yaml.safe_dump(obj, sort_keys=False))
    action = apply_inferenceservice(obj)
    manifest.metadata.update({"name": name, "namespace": namespace, "storage_uri": spec.storage_uri, "action": action})
    return action
