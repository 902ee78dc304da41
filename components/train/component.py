"""train: train the asymmetric decoder on a prepared Dataset, as a PyTorchJob or in place; a Model artifact."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    config: str = "demo",
    overrides: Optional[list] = None,  # noqa: UP045 - KFP reads the annotation; it predates X | None
    launcher: str = "local",
    nodes: int = 1,
    gpus_per_node: int = 0,
    image: str = "",
    runs_dir: str = "",
    namespace: str = "asymvae",
    output_pvc: str = "",
    credentials_secret: str = "mlpipeline-minio-artifact",
    s3_endpoint: str = "",
    timeout_s: float = 172800.0,
):
    """Train per `config` on `dataset`'s shards; the final export lands in `model` (`vae/`, `config.yaml`,
    `baseline/vae` when the base VAE is a local folder).

    Args:
        dataset: Output of the prepare component.
        model: The trained model (a diffusers export).
        config: Preset name or YAML path (`asymvae configs`).
        overrides: `section.field=value` overrides, e.g. `train.max_steps=1000`.
        launcher: `kubeflow` (a PyTorchJob: Master + nodes-1 Workers) or `local` (torchrun in this step).
        nodes: Pods of the PyTorchJob.
        gpus_per_node: GPUs per pod (= training processes per node; at least 1 process).
        image: Image of the PyTorchJob pods (default: this component's image).
        runs_dir: Run folders (checkpoints); default `work_dirs/pipeline` locally, `/mnt/runs` (the PVC) for kubeflow.
        namespace: Namespace of the PyTorchJob.
        output_pvc: PVC holding `runs_dir` in the job's pods and this step (kubeflow).
        credentials_secret: Secret with the object-store keys for the job's pods.
        s3_endpoint: Object-store endpoint for the job's pods (default: this step's S3_ENDPOINT).
        timeout_s: Deadline of the PyTorchJob.
    """
    import os

    from asymvae.steps.train import TrainStepConfig, train_step
    from asymvae.steps.uris import job_name, shards_location

    kubeflow = launcher == "kubeflow"
    cfg = TrainStepConfig(
        config=config,
        overrides=list(overrides or []),
        launcher=launcher,
        image=image or os.environ.get("ASYMVAE_IMAGE", ""),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        runs_dir=runs_dir or ("/mnt/runs" if kubeflow else "work_dirs/pipeline"),
        namespace=namespace,
        output_pvc=output_pvc,
        credentials_secret=credentials_secret,
        s3_endpoint=s3_endpoint or os.environ.get("S3_ENDPOINT", ""),
        timeout_s=timeout_s,
    )
    shards = shards_location(launcher, dataset.metadata.get("manifest_uri", ""), dataset.uri, dataset.path)
    meta = train_step(cfg, shards, model.path, job_name("asymvae-train", model.uri))
    model.metadata.update(meta)
