"""The asymvae pipeline: prepare → train → evaluate → export (diffusers and Triton) → optional deploy.

Training runs as a PyTorchJob (`launcher=kubeflow`: this step only submits and waits, its run folder on the
PVC `output_pvc`) or in the train step itself (`launcher=local`, with `step_gpus` GPUs). Object-store
credentials come from KFP's Secret `mlpipeline-minio-artifact` as environment variables: the compiled YAML
names the Secret and its keys, never a value. Compile with `asymvae pipeline compile`.
"""

import inspect
from typing import Any

from kfp import dsl, kubernetes

from asymvae.config import ConfigError
from asymvae_components._image import IMAGE
from asymvae_components.deploy.component import deploy
from asymvae_components.evaluate.component import evaluate
from asymvae_components.export.component import export
from asymvae_components.prepare.component import prepare
from asymvae_components.train.component import train

PIPELINE_NAME = "asymvae"
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
"""KFP's default artifact store (its MinIO, or SeaweedFS behind the same `minio-service`)."""
CREDENTIALS_SECRET = "mlpipeline-minio-artifact"
CREDENTIALS_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
S3_ENDPOINT = "minio-service.kubeflow:9000"
RUNS_MOUNT = "/mnt/runs"


def _with_store(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give a task the object-store credentials (from the Secret) and endpoint; cache nothing that trains."""
    kubernetes.use_secret_as_env(task, secret_name=CREDENTIALS_SECRET, secret_key_to_env=CREDENTIALS_ENV)
    return task.set_env_variable("S3_ENDPOINT", S3_ENDPOINT).set_env_variable("S3_USE_HTTPS", "0")


@dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0], pipeline_root=DEFAULT_PIPELINE_ROOT)
def asymvae_pipeline(
    config: str = "demo",
    overrides: list = [],  # noqa: B006 - a pipeline parameter's default, compiled into the YAML
    source: str = "builtin:demo",
    prepare_target: str = "",
    prepare_overrides: list = [],  # noqa: B006
    launcher: str = "kubeflow",
    nodes: int = 1,
    gpus_per_node: int = 1,
    step_gpus: int = 0,
    runs_dir: str = RUNS_MOUNT,
    image: str = IMAGE,
    namespace: str = "asymvae",
    output_pvc: str = "asymvae-runs",
    eval_data: str = "builtin:demo?seed=1",
    eval_resolution: int = 64,
    eval_max_images: int = 0,
    deploy_model: bool = False,
    deploy_name: str = "asymvae-decoder",
    deploy_gpus: int = 1,
):
    """Train an asymmetric decoder from `source` and evaluate, export and (optionally) deploy it.

    Args:
        config: Training preset or YAML path in the image (`asymvae configs`).
        overrides: `section.field=value` training overrides.
        source: Data source for prepare (hub id, folder, parquet, `builtin:demo`).
        prepare_target: `s3://bucket/prefix` for the shards (reused across runs); empty: the pipeline's artifacts.
        prepare_overrides: `prepare.FIELD=VALUE` settings.
        launcher: `kubeflow` (PyTorchJob, needs the training operator and `output_pvc`) or `local` (in the step).
        nodes: PyTorchJob pods (Master + nodes-1 Workers).
        gpus_per_node: GPUs per PyTorchJob pod (= training processes per node; with launcher=local the
            processes the train step starts).
        step_gpus: GPUs of the train step's own pod (for launcher=local on a cluster).
        runs_dir: Run folders (checkpoints) of the train step: the PVC's mount point on a cluster.
        image: Image of the PyTorchJob pods.
        namespace: Namespace of the PyTorchJob and the InferenceService.
        output_pvc: ReadWriteMany PVC for run folders (launcher=kubeflow), mounted at /mnt/runs.
        eval_data: Held-out images for evaluate.
        eval_resolution: Evaluation crop side (the demo trains at 64).
        eval_max_images: Evaluate only the first N images (0: all).
        deploy_model: Serve the Triton export with KServe.
        deploy_name: InferenceService name.
        deploy_gpus: GPUs per serving replica.
    """
    prepared = _with_store(prepare(source=source, target=prepare_target, overrides=prepare_overrides))
    prepared.set_caching_options(False)

    # One train task for both launchers (kfp.local cannot merge artifacts of dsl.If/Else branches with
    # dsl.OneOf): the PVC is mounted either way, and `step_gpus` GPUs go to this task's own pod.
    trained = _with_store(
        train(
            dataset=prepared.outputs["dataset"],
            config=config,
            overrides=overrides,
            launcher=launcher,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            image=image,
            runs_dir=runs_dir,
            namespace=namespace,
            output_pvc=output_pvc,
            credentials_secret=CREDENTIALS_SECRET,
            s3_endpoint=S3_ENDPOINT,
        )
    )
    kubernetes.mount_pvc(trained, pvc_name=output_pvc, mount_path=RUNS_MOUNT)
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(step_gpus)
    trained.set_caching_options(False)
    model = trained.outputs["model"]

    scored = evaluate(model=model, data=eval_data, resolution=eval_resolution, max_images=eval_max_images)
    export(model=model, results=scored.outputs["results"], format="diffusers").set_display_name("export diffusers")
    triton = export(model=model, results=scored.outputs["results"], format="triton").set_display_name("export triton")
    with dsl.If(deploy_model == True, name="deploy"):  # noqa: E712 - a pipeline condition, not a Python bool
        deploy(exported=triton.outputs["exported"], name=deploy_name, namespace=namespace, gpus=deploy_gpus)


def check_params(params: dict[str, Any]) -> None:
    """Refuse arguments the pipeline has no parameter for (a typo would otherwise be dropped silently)."""
    known = inspect.signature(asymvae_pipeline.pipeline_func).parameters
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
