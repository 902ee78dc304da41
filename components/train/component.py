"""train: train the asymmetric decoder on prepared shards, as a TrainJob, a PyTorchJob or in place; a Model."""

from kfp import dsl
from kfp.dsl import Markdown, Model, Output

from asymvae.steps.train import TrainStepConfig
from asymvae_components._image import IMAGE
from asymvae_components._params import from_config


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@from_config(TrainStepConfig)
def train(
    shards: str,
    model: Output[Model],
    tensorboard: Output[Markdown],
    config: str = "demo",
    overrides: list = [],  # noqa: B006 - KFP compiles the default; the function never changes it
    launcher: str = "trainjob",
    image: str = "",
    nodes: int = 1,
    gpus_per_node: int = 1,
    runs_dir: str = "",
    namespace: str = "",
    output_pvc: str = "",
    credentials_secret: str = "mlpipeline-minio-artifact",
    s3_endpoint: str = "",
    s3_use_https: bool = False,
    node_cpu: str = "8",
    node_memory: str = "64Gi",
    node_selector: dict = {},  # noqa: B006
    tolerations: list = [],  # noqa: B006
    max_restarts: int = 3,
    timeout_s: float = 172800.0,
):
    """Train per `config` on the prepared shards; the final export lands in `model` (`vae/`, `config.yaml`,
    `provenance.json`, `baseline/vae` when the base VAE is a local folder). Every setting is documented once,
    on the library's TrainStepConfig, and checked against it when this module is imported.

    Args:
        shards: The prepared dataset's manifest (output `shards` of the prepare component: an `s3://` URI or,
            in local runs, a path). A string, not the Dataset artifact: KFP's launcher would download every
            input artifact into this step, which the training job reads from the object store itself.
        model: The trained model (a diffusers export), with the run's TensorBoard logs in `tensorboard/`
            when the step can reach them.
        tensorboard: Where the run's TensorBoard logs are and how to open them in a Kubeflow TensorBoard.
    """
    given = dict(locals())
    import dataclasses

    from asymvae.steps.train import TrainStepConfig, tensorboard_page, train_step
    from asymvae.steps.uris import job_name, task_store, use_store_endpoint

    use_store_endpoint(s3_endpoint, s3_use_https)
    cfg = TrainStepConfig(**{f.name: given[f.name] for f in dataclasses.fields(TrainStepConfig)})
    meta = train_step(cfg, shards, model.path, job_name("asymvae-train", model.uri), run_store=task_store(model.uri))
    model.metadata.update(meta)
    logs = f"{model.uri}/{meta['tensorboard']}" if meta.get("tensorboard") else ""
    with open(tensorboard.path, "w") as f:
        f.write(tensorboard_page(logs, job_name("asymvae-tb", model.uri)))
