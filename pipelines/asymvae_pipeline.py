"""The asymvae pipeline: prepare → train → evaluate → export (diffusers and Triton) → optional deploy.

Made for a multi-user Kubeflow with its defaults: everything it creates (training job, InferenceService) goes
to the run's own namespace, which each step reads from its pod (downward API); no pipeline root is compiled
in, so the namespace's own artifact root applies; the object-store endpoint and TLS are parameters
defaulting to current KFP's SeaweedFS. Training runs as a Kubeflow Trainer v2 TrainJob (`launcher=trainjob`,
the default), a training-operator v1 PyTorchJob (`launcher=pytorchjob`) or in the train step itself
(`launcher=local`). Object-store credentials come from KFP's Secret `mlpipeline-minio-artifact` as
environment variables: the compiled YAML names the Secret and its keys, never a value. Every step has CPU and
memory requests and limits and a timeout; the steps that are safe to repeat are retried. Each parameter is
declared once (asymvae_pipelines.parameters). Compile with `asymvae pipeline compile`.
"""

from typing import Any

from kfp import dsl, kubernetes

from asymvae.cluster.pod import IMAGE_ENV, NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV
from asymvae.config import ConfigError
from asymvae.steps.train import RUNS_MOUNT
from asymvae_components._image import IMAGE
from asymvae_components.deploy.component import deploy
from asymvae_components.evaluate.component import evaluate
from asymvae_components.export.component import export
from asymvae_components.prepare.component import prepare
from asymvae_components.train.component import train
from asymvae_pipelines.parameters import From, Own, Param, docstring, signature

PIPELINE_NAME = "asymvae"
DESCRIPTION = __doc__.splitlines()[0]
CREDENTIALS_SECRET = "mlpipeline-minio-artifact"
CREDENTIALS_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
S3_ENDPOINT = "seaweedfs.kubeflow:9000"
"""Current KFP's object store (SeaweedFS); KFP <= 2.15 serves it as `minio-service.kubeflow:9000`."""
HOUR = 3600
STEP_RESOURCES = {
    # step: (CPU request = limit, memory request = limit, timeout in seconds)
    "prepare": ("2", "8Gi", 6 * HOUR),
    "evaluate": ("4", "16Gi", 4 * HOUR),
    "export": ("2", "16Gi", 2 * HOUR),
    "deploy": ("500m", "1Gi", 1 * HOUR),
}
TRAIN_TIMEOUT_S = 48 * HOUR
"""Deadline of the training job; the train step's own timeout adds an hour for the base model and the copy."""
RETRIES = 2
"""Retries of prepare, train, evaluate and export after a failure (node loss, API hiccups): each can repeat
without harm (prepare reuses an up-to-date dataset, train adopts its running job by spec hash and resumes from
its last checkpoint, evaluate and export rewrite their artifacts). Argo retries on any failure, so the train
step itself stops a retry after the training failed (asymvae.cluster.verdict). Deploy is not retried: its
inference check is a verdict, not a hiccup."""


def _with_store(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give a task the object-store credentials, from the Secret, as environment variables."""
    kubernetes.use_secret_as_env(task, secret_name=CREDENTIALS_SECRET, secret_key_to_env=CREDENTIALS_ENV)
    return task


def _limits(task: dsl.PipelineTask, cpu: Any, memory: Any, timeout_s: int) -> dsl.PipelineTask:
    """CPU and memory requests equal to their limits (no BestEffort pod, a ResourceQuota accepts it) and a timeout."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.set_timeout(task, timeout_s)
    return task


def _step(task: dsl.PipelineTask, step: str, retry: bool) -> dsl.PipelineTask:
    cpu, memory, timeout_s = STEP_RESOURCES[step]
    _limits(task, cpu, memory, timeout_s)
    if retry:
        task.set_retry(num_retries=RETRIES, backoff_duration="60s", backoff_factor=2.0)
    return task


PARAMETERS: list[Param] = [
    From("config", train, "config"),
    From("overrides", train, "overrides"),
    From("source", prepare, "source"),
    From("prepare_target", prepare, "target"),
    From("prepare_overrides", prepare, "overrides"),
    From("launcher", train, "launcher"),
    From("nodes", train, "nodes"),
    From("gpus_per_node", train, "gpus_per_node"),
    From("node_cpu", train, "node_cpu"),
    From("node_memory", train, "node_memory"),
    Own("gpu_node_selector", dict, {}, "Node labels every GPU pod (training pods, serving replicas) must match."),
    Own(
        "gpu_tolerations",
        list,
        [],
        "Taints every GPU pod (training pods, the train step, serving replicas) tolerates besides "
        "`nvidia.com/gpu` (NoSchedule), which they always tolerate.",
    ),
    From("max_restarts", train, "max_restarts"),
    Own(
        "step_gpus",
        str,
        "0",
        "GPUs of the train step's own pod (for launcher=local on a cluster). A string: KFP's driver reads a "
        "resource placeholder as a string and drops any other type, so an integer would give no GPU.",
    ),
    Own("step_cpu", str, "4", "CPU request and limit of the train step's own pod."),
    Own("step_memory", str, "16Gi", "Memory request and limit of the train step's own pod."),
    Own(
        "step_node_selector",
        dict,
        {},
        "Node labels the train step's own pod must match (e.g. GPU nodes with step_gpus).",
    ),
    From("runs_dir", train, "runs_dir"),
    From("image", train, "image"),
    Own("namespace", str, "", "Namespace of the training job and the InferenceService; empty: the run's own."),
    Own("s3_endpoint", str, S3_ENDPOINT, "Object-store endpoint (host:port) of the steps and the training pods."),
    Own("s3_use_https", bool, False, "TLS to the object store."),
    From("eval_data", evaluate, "data"),
    From("eval_resolution", evaluate, "resolution"),
    From("eval_max_images", evaluate, "max_images"),
    Own("deploy_model", bool, False, "Serve the model with KServe (and check one inference)."),
    From("deploy_name", deploy, "name"),
    From("deploy_runtime", deploy, "runtime"),
    From("deploy_gpus", deploy, "gpus"),
    From("deploy_gate", deploy, "gate"),
    From("deploy_min_improvement", deploy, "min_improvement"),
    From("deploy_first_max_ratio", deploy, "first_deploy_max_ratio"),
]
"""Every pipeline parameter, in the order the UI lists them (see asymvae_pipelines.parameters)."""
SIGNATURE = signature(PARAMETERS)


def _pipeline(p: dict[str, Any], runs_volume: str | None) -> None:
    """The DAG for the arguments `p` (every parameter of SIGNATURE), with the PVC `runs_volume` (or none)."""
    store = {"s3_endpoint": p["s3_endpoint"], "s3_use_https": p["s3_use_https"]}
    prepared = _with_store(
        prepare(source=p["source"], target=p["prepare_target"], overrides=p["prepare_overrides"], **store)
    )
    _step(prepared, "prepare", retry=True).set_caching_options(False)

    # One train task for all launchers (kfp.local cannot merge artifacts of dsl.If/Else branches with
    # dsl.OneOf): `step_gpus` GPUs go to this task's own pod whatever the launcher.
    trained = _with_store(
        train(
            shards=prepared.outputs["shards"],
            config=p["config"],
            overrides=p["overrides"],
            launcher=p["launcher"],
            nodes=p["nodes"],
            gpus_per_node=p["gpus_per_node"],
            image=p["image"],
            runs_dir=p["runs_dir"],
            namespace=p["namespace"],
            output_pvc=runs_volume or "",
            credentials_secret=CREDENTIALS_SECRET,
            node_cpu=p["node_cpu"],
            node_memory=p["node_memory"],
            node_selector=p["gpu_node_selector"],
            tolerations=p["gpu_tolerations"],
            max_restarts=p["max_restarts"],
            timeout_s=float(TRAIN_TIMEOUT_S),
            **store,
        )
    )
    if runs_volume:  # a compile-time choice: KFP's driver refuses a mount whose PVC name is empty (k8s.go:1079)
        kubernetes.mount_pvc(trained, pvc_name=runs_volume, mount_path=RUNS_MOUNT)
    kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="16Gi")
    # The pod's own identity: the job goes to its namespace and is owned by (deleted with) the pod.
    for env, path in ((NAMESPACE_ENV, "metadata.namespace"), (POD_NAME_ENV, "metadata.name"),
                      (POD_UID_ENV, "metadata.uid")):  # fmt: skip
        kubernetes.use_field_path_as_env(trained, env, path)
    # The step's own image (compiled in, replaced by `--image`): the job's pods run it unless `image` is set.
    trained.set_env_variable(IMAGE_ENV, IMAGE)
    kubernetes.add_toleration(trained, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.add_toleration_json(trained, p["gpu_tolerations"])
    kubernetes.add_node_selector_json(trained, p["step_node_selector"])
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(p["step_gpus"])
    _limits(trained, p["step_cpu"], p["step_memory"], TRAIN_TIMEOUT_S + HOUR)
    trained.set_retry(num_retries=RETRIES, backoff_duration="60s", backoff_factor=2.0)
    trained.set_caching_options(False)
    model = trained.outputs["model"]

    scored = _with_store(
        evaluate(
            model=model,
            data=p["eval_data"],
            resolution=p["eval_resolution"],
            max_images=p["eval_max_images"],
            **store,
        )
    )
    _step(scored, "evaluate", retry=True)
    exports = {}
    for fmt in ("diffusers", "triton"):
        exports[fmt] = export(model=model, results=scored.outputs["results"], format=fmt)
        _step(exports[fmt].set_display_name(f"export {fmt}"), "export", retry=True)
    with dsl.If(p["deploy_model"] == True, name="deploy"):  # noqa: E712 - a pipeline condition, not a Python bool
        served = deploy(
            exported=exports["triton"].outputs["exported"],
            diffusers=exports["diffusers"].outputs["exported"],
            name=p["deploy_name"],
            runtime=p["deploy_runtime"],
            namespace=p["namespace"],
            gpus=p["deploy_gpus"],
            node_selector=p["gpu_node_selector"],
            tolerations=p["gpu_tolerations"],
            gate=p["deploy_gate"],
            min_improvement=p["deploy_min_improvement"],
            first_deploy_max_ratio=p["deploy_first_max_ratio"],
            **store,
        )
        _with_store(served)  # the gate reads the serving export's evaluation.json
        kubernetes.use_field_path_as_env(served, NAMESPACE_ENV, "metadata.namespace")
        served.set_env_variable(IMAGE_ENV, IMAGE)  # the predictor's image (runtime=predictor) is the step's own
        _step(served, "deploy", retry=False).set_caching_options(False)  # it changes the cluster: never cached


DOCSTRING = docstring(
    "Train an asymmetric decoder from `source` and evaluate, export and (optionally) deploy it.", PARAMETERS
)


def build_pipeline(pipeline_root: str | None = None, runs_volume: str | None = None) -> Any:
    """The pipeline, with `pipeline_root` compiled in when given (else the namespace's default root applies).

    Without `runs_volume` no volume is mounted, so the run schedules on any cluster: run folders stay on each
    pod's disk and checkpoints and the export go through the object store. With it, the ReadWriteMany PVC of
    that name (k8s/runs-volume) holds the run folders of the train step and the training job's pods."""

    # A fresh function each time: kfp records the root as an attribute of the function it decorates.
    def pipeline(*args: Any, **kwargs: Any) -> None:
        bound = SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        _pipeline(bound.arguments, runs_volume)

    pipeline.__signature__ = SIGNATURE  # type: ignore[attr-defined]
    pipeline.__doc__ = DOCSTRING
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION, pipeline_root=pipeline_root)(pipeline)


asymvae_pipeline = build_pipeline()


def check_params(params: dict[str, Any]) -> None:
    """Refuse arguments the pipeline has no parameter for (a typo would otherwise be dropped silently)."""
    known = SIGNATURE.parameters
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
