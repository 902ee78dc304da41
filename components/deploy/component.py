"""deploy: serve the export with KServe (the Triton runtime or the `asymvae serve` predictor), wait until it is
Ready, and check that it answers."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from asymvae.steps.deploy import DeployStepConfig
from asymvae_components._image import IMAGE
from asymvae_components._params import from_config


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@from_config(DeployStepConfig)
def deploy(
    exported: Input[Model],
    manifest: Output[Artifact],
    diffusers: Input[Model] = None,
    name: str = "asymvae-decoder",
    runtime: str = "triton",
    image: str = "",
    namespace: str = "",
    service_account: str = "asymvae-serving",
    gpus: int = 1,
    cpu: str = "2",
    memory: str = "8Gi",
    node_selector: dict = {},  # noqa: B006 - KFP compiles the default; the function never changes it
    tolerations: list = [],  # noqa: B006
    ready_timeout_s: float = 2400.0,
    check_size: int = 64,
) -> str:
    """Apply a KServe InferenceService serving `exported` (runtime `triton`) or `diffusers` (runtime `predictor`)
    from the object store, wait for Ready, then send one v2 inference (latent, image, mask) and check the
    decoded image's shape.

    Every setting is documented once, on the library's DeployStepConfig, and checked against it when this
    module is imported.

    Args:
        exported: Output of the export component with format `triton`: served with runtime `triton`.
        manifest: The InferenceService applied (YAML); metadata: its URL, the model's name, the check.
        diffusers: Output of the export component with format `diffusers`: served with runtime `predictor`.

    Returns:
        `created` or `updated`.
    """
    given = dict(locals())
    import dataclasses
    from pathlib import Path

    import yaml

    from asymvae.serving.inferenceservice import DeploymentError, storage_uri
    from asymvae.steps.deploy import DeployStepConfig, deploy_step
    from asymvae.steps.uris import store_uri

    settings = {f.name: given[f.name] for f in dataclasses.fields(DeployStepConfig) if f.name in given}
    cfg = DeployStepConfig(**settings)
    served = exported if cfg.runtime == "triton" else diffusers
    if served is None:
        raise DeploymentError(
            "deploy: runtime=predictor serves the diffusers export, and no `diffusers` input was given. "
            "Fix: pass the `exported` output of the export component with format diffusers as `diffusers`"
        )
    done = deploy_step(cfg, served.path, store_uri(served.uri))
    Path(manifest.path).write_text(yaml.safe_dump(done.manifest, sort_keys=False))
    manifest.metadata.update(
        {
            "name": name,
            "namespace": done.manifest["metadata"]["namespace"],
            "runtime": cfg.runtime,
            "storage_uri": storage_uri(done.manifest),
            "action": done.action,
            "url": done.url,
            "model": done.model,
            "infer_route": f"/v2/models/{done.model}/infer",
            "output_shape": done.check.output_shape,
            "seconds": done.check.seconds,
        }
    )
    return done.action
