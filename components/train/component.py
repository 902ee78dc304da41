"""train: train the asymmetric decoder on a prepared Dataset, as a PyTorchJob, a TrainJob or in place; a Model."""

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
    namespace: str = "",
    output_pvc: str = "",
    credentials_secret: str = "mlpipeline-minio-artifact",
    s3_endpoint: str = "",
    s3_use_https: bool = False,
    node_cpu: str = "",
    node_memory: str = "",
    node_selector: Optional[dict] = None,  # noqa: UP045
    tolerations: Optional[list] = None,  # noqa: UP045
    max_restarts: int = 3,
    timeout_s: float = 172800.0,
):
    """Train per `config` on `dataset`'s shards; the final export lands in `model` (`vae/`, `config.yaml`,
    `baseline/vae` when the base VAE is a local folder).

    Args:
        dataset: Output of the prepare component.
        model: The trained model (a diffusers export).
        config: Preset name or YAML path (`asymvae configs`).
        overrides: `section.field=value` overrides, e.g. `train.max_steps=1000`.
        launcher: `pytorchjob` (a training-operator PyTorchJob: Master + nodes-1 Workers), `trainjob` (a Kubeflow
            Trainer v2 TrainJob on the `torch-distributed` runtime) or `local` (torchrun in this step).
        nodes: Pods of the job, one per node.
        gpus_per_node: GPUs per pod (= training processes per node; at least 1 process).
        image: Image of the job's pods (default: this component's image).
        runs_dir: Run folders (checkpoints); default `work_dirs/pipeline` locally, `/mnt/runs` (the PVC) on a cluster.
        namespace: Namespace of the job; empty: this step's own (its pod's, from the downward API).
        output_pvc: PVC holding `runs_dir` in the job's pods and this step (cluster launchers).
        credentials_secret: Secret with the object-store keys for the job's pods.
        s3_endpoint: Object-store endpoint (host:port) for this step and the job's pods; empty: this step's
            S3_ENDPOINT.
        s3_use_https: TLS to the object store.
        node_cpu: CPU request and limit of each job pod (empty: unset).
        node_memory: Memory request and limit of each job pod (empty: unset).
        node_selector: Node labels the job's pods must match (e.g. a GPU product).
        tolerations: Taints the job's pods tolerate (Kubernetes' form) besides `nvidia.com/gpu`, which GPU pods
            always tolerate.
        max_restarts: Restarts of the job's pods (e.g. OOM kills) after which the job is deleted and the step fails.
        timeout_s: Deadline of the job.
    """
    import os

    from asymvae.steps.train import TrainStepConfig, train_step
    from asymvae.steps.uris import job_name, shards_location, use_store_endpoint

    use_store_endpoint(s3_endpoint, s3_use_https)
    cluster = launcher != "local"
    cfg = TrainStepConfig(
        config=config,
        overrides=list(overrides or []),
        launcher=launcher,
        image=image or os.environ.get("ASYMVAE_IMAGE", ""),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        runs_dir=runs_dir or ("/mnt/runs" if cluster else "work_dirs/pipeline"),
        namespace=namespace,
        output_pvc=output_pvc,
        credentials_secret=credentials_secret,
        s3_endpoint=s3_endpoint or os.environ.get("S3_ENDPOINT", ""),
        s3_use_https=s3_use_https,
        cpu=node_cpu,
        memory=node_memory,
        node_selector=dict(node_selector or {}),
        tolerations=list(tolerations or []),
        max_restarts=max_restarts,
        timeout_s=timeout_s,
    )
    shards = shards_location(launcher, dataset.metadata.get("manifest_uri", ""), dataset.uri, dataset.path)
    meta = train_step(cfg, shards, model.path, job_name("asymvae-train", model.uri))
    model.metadata.update(meta)
