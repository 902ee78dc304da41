"""deploy: serve the export with KServe (the Triton runtime or the `asymvae serve` predictor), wait until it is
Ready, and check that it answers."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from asymvae.steps.deploy import DeployStepConfig
from asymvae_components._image import IMAGE
from asymvae_components._params import from_config


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@from_config(DeployStepConfig)
def deploy(
    exported: Input[Model],
    manifest: Output[Artifact],
    verdict: Output[Markdown],
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
    gate: str = "on",
    min_improvement: float = 0.0,
    first_deploy_max_ratio: float = 1.0,
    s3_endpoint: str = "",
    s3_use_https: bool = False,
) -> str:
    """Apply a KServe InferenceService serving `exported` (runtime `triton`) or `diffusers` (runtime `predictor`)
    from the object store, wait for Ready, then send one v2 inference (latent, image, mask) and check the
    decoded image's shape; unless the deploy gate keeps the export being served (it scores no worse on the same
    held-out evaluation), which leaves the cluster as it is and still succeeds.

    Every setting is documented once, on the library's DeployStepConfig, and checked against it when this
    module is imported.

    Args:
        exported: Output of the export component with format `triton`: served with runtime `triton`.
        manifest: The InferenceService applied (YAML; when kept, the one not applied); metadata: the action, its
            URL, the model's name, the check, the gate's verdict and numbers.
        verdict: The deploy gate's verdict as Markdown: deployed or kept, why, both exports' scores.
        diffusers: Output of the export component with format `diffusers`: served with runtime `predictor`.
        s3_endpoint: Object-store endpoint (host:port) where the gate reads the serving export's
            evaluation.json; empty: the environment's.
        s3_use_https: TLS to the object store.

    Returns:
        `created`, `updated` or `kept`.
    """
    given = dict(locals())
    import dataclasses
    from pathlib import Path

    import yaml

    from asymvae.serving.inferenceservice import DeploymentError, storage_uri
    from asymvae.steps.deploy import DeployStepConfig, deploy_step
    from asymvae.steps.uris import store_uri, use_store_endpoint

    use_store_endpoint(s3_endpoint, s3_use_https)
    settings = {f.name: given[f.name] for f in dataclasses.fields(DeployStepConfig) if f.name in given}
    cfg = DeployStepConfig(**settings)
    served = exported if cfg.runtime == "triton" else diffusers
    if served is None:
        raise DeploymentError(
            "deploy: runtime=predictor serves the diffusers export, and no `diffusers` input was given. "
            "Fix: pass the `exported` output of the export component with format diffusers as `diffusers`"
        )
    done = deploy_step(cfg, served.path, store_uri(served.uri))
    kept = "# Not applied: the deploy gate kept the export being served (see the verdict output).\n"
    head = kept if done.action == "kept" else ""
    Path(manifest.path).write_text(head + yaml.safe_dump(done.manifest, sort_keys=False))
    Path(verdict.path).write_text(done.verdict.markdown())
    verdict.metadata.update(done.verdict.metadata())
    manifest.metadata.update(
        {
            "name": name,
            "namespace": done.manifest["metadata"]["namespace"],
            "runtime": cfg.runtime,
            "storage_uri": storage_uri(done.manifest),
            "action": done.action,
            "model": done.model,
            **done.verdict.metadata(),
        }
    )
    if done.check is not None:
        manifest.metadata.update(
            {
                "url": done.url,
                "infer_route": f"/v2/models/{done.model}/infer",
                "output_shape": done.check.output_shape,
                "seconds": done.check.seconds,
            }
        )
    return done.action
