"""The compiled pipeline and components: committed YAML up to date, credentials only by reference, the expected
DAG, and single components reusable in someone else's pipeline.

No `from __future__ import annotations` here: kfp reads the test pipeline's annotations as types.
"""

from pathlib import Path

import pytest
import yaml
from kfp import compiler, components, dsl

from asymvae_components import STEPS, component_file
from asymvae_pipelines.compiled import compile_components, compile_pipeline

REPO = Path(__file__).resolve().parents[1]
COMMITTED_YAML = REPO / "pipelines" / "asymvae_pipeline.yaml"
REGENERATE = "asymvae pipeline compile --out pipelines/asymvae_pipeline.yaml --components components"


def _docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_is_not_stale(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "p.yaml")
    assert fresh.read_text() == COMMITTED_YAML.read_text(), (
        f"pipelines/asymvae_pipeline.yaml is stale: run `{REGENERATE}` and commit it"
    )


def test_committed_components_are_not_stale(tmp_path: Path) -> None:
    for fresh in compile_components(tmp_path):
        step = fresh.parent.name
        committed = REPO / "components" / step / "component.yaml"
        assert fresh.read_text() == committed.read_text(), (
            f"components/{step}/component.yaml is stale: run `{REGENERATE}` and commit it"
        )
        # the installed copy is the committed one
        assert component_file(step).read_text() == committed.read_text()


def test_a_component_loads_into_another_pipeline(tmp_path: Path) -> None:
    """What a Kubeflow user does: load one component's YAML into their own pipeline and compile that."""
    prepare = components.load_component_from_file(str(component_file("prepare")))
    evaluate = components.load_component_from_file(str(component_file("evaluate")))

    @dsl.pipeline(name="someone-elses-pipeline")
    def theirs(source: str = "/data/images"):
        prepared = prepare(source=source, overrides=["prepare.max_side=512"])
        prepared.set_caching_options(False)
        evaluate(model=dsl.importer(artifact_uri="s3://models/asym", artifact_class=dsl.Model).output,
                 data="s3://datasets/held-out", baseline="s3://models/sd15-vae")  # fmt: skip

    out = tmp_path / "theirs.yaml"
    compiler.Compiler().compile(theirs, str(out))
    spec = yaml.safe_load(out.read_text())
    assert set(spec["root"]["dag"]["tasks"]) >= {"prepare", "evaluate"}
    cmd = " ".join(spec["deploymentSpec"]["executors"]["exec-prepare"]["container"]["command"])
    assert "from asymvae.steps.prepare import prepare_step" in cmd


def test_unknown_component_is_refused() -> None:
    with pytest.raises(ValueError, match="no component 'trian'"):
        component_file("trian")
    assert STEPS == ("prepare", "train", "evaluate", "export", "deploy")


def test_compile_is_deterministic(tmp_path: Path) -> None:
    a, b = compile_pipeline(tmp_path / "a.yaml"), compile_pipeline(tmp_path / "b.yaml")
    assert a.read_text() == b.read_text()


def test_dag_and_artifacts() -> None:
    spec, _ = _docs(COMMITTED_YAML)
    # no pipeline root compiled in: the namespace's default root applies (the UI would pre-fill a compiled one)
    assert "defaultPipelineRoot" not in spec
    tasks = spec["root"]["dag"]["tasks"]
    assert {"prepare", "train", "evaluate", "export", "export-2", "condition-1"} <= set(tasks)
    assert tasks["train"]["dependentTasks"] == ["prepare"]
    assert "train" in tasks["evaluate"]["dependentTasks"]
    # deploy only runs inside the deploy_model condition
    assert (
        tasks["condition-1"]["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--deploy_model'] == true"
    )
    comps = spec["components"]
    outputs = {name: c.get("outputDefinitions", {}).get("artifacts", {}) for name, c in comps.items()}
    types = {n: {k: v["artifactType"]["schemaTitle"] for k, v in o.items()} for n, o in outputs.items()}
    assert types["comp-prepare"] == {"dataset": "system.Dataset"}
    assert comps["comp-prepare"]["outputDefinitions"]["parameters"] == {"shards": {"parameterType": "STRING"}}
    assert types["comp-train"] == {"model": "system.Model", "tensorboard": "system.Markdown"}
    assert types["comp-evaluate"] == {
        "metrics": "system.Metrics",
        "report": "system.HTML",
        "table": "system.Markdown",
        "results": "system.Artifact",
    }
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("config", "overrides", "source", "nodes", "gpus_per_node", "launcher", "deploy_model"):
        assert name in params
    defaults = {name: p.get("defaultValue") for name, p in params.items()}
    assert defaults["namespace"] == "" and defaults["s3_endpoint"] == "seaweedfs.kubeflow:9000"
    assert defaults["s3_use_https"] is False


def test_deploy_gets_both_exports_and_the_runtime_choice() -> None:
    """deploy_runtime picks what the deploy step serves: the Triton export (`exported`, from the export task of
    format triton) or the diffusers export (`diffusers`) with `asymvae serve` on the step's own image."""
    spec, _ = _docs(COMMITTED_YAML)
    tasks = spec["root"]["dag"]["tasks"]
    exports = ("export", "export-2")
    formats = {tasks[t]["inputs"]["parameters"]["format"]["runtimeValue"]["constant"]: t for t in exports}
    channels = tasks["condition-1"]["inputs"]["artifacts"]
    deploy = spec["components"]["comp-condition-1"]["dag"]["tasks"]["deploy"]["inputs"]
    producer = {k: channels[v["componentInputArtifact"]]["taskOutputArtifact"] for k, v in deploy["artifacts"].items()}
    assert producer == {
        "exported": {"outputArtifactKey": "exported", "producerTask": formats["triton"]},
        "diffusers": {"outputArtifactKey": "exported", "producerTask": formats["diffusers"]},
    }
    assert deploy["parameters"]["runtime"] == {"componentInputParameter": "pipelinechannel--deploy_runtime"}
    param = spec["root"]["inputDefinitions"]["parameters"]["deploy_runtime"]
    assert param["defaultValue"] == "triton" and "predictor" in param["description"]
    container = spec["deploymentSpec"]["executors"]["exec-deploy"]["container"]
    assert container["env"] == [{"name": "ASYMVAE_IMAGE", "value": container["image"]}]


def test_credentials_are_secret_references_only() -> None:
    text = COMMITTED_YAML.read_text()
    _, platform = _docs(COMMITTED_YAML)
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-prepare", "exec-train", "exec-evaluate", "exec-deploy"):  # deploy: the gate reads the store
        secret = execs[name]["secretAsEnv"][0]
        assert secret["secretName"] == "mlpipeline-minio-artifact"
        assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }
    # no volume by default: the run schedules anywhere (checkpoints and the export go through the object store)
    assert "pvcMount" not in execs["exec-train"]
    # no value of the keys anywhere: the only AWS_ names are env var names in secretAsEnv
    assert "minio123" not in text and "REPLACE-ME" not in text


def _executors() -> tuple[dict, dict]:
    spec, platform = _docs(COMMITTED_YAML)
    return spec["deploymentSpec"]["executors"], platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_has_resources_a_timeout_and_the_right_retries_and_caching() -> None:
    spec, _ = _docs(COMMITTED_YAML)
    containers, platform = _executors()
    for name, executor in containers.items():
        resources = executor["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), f"{name} has no {key}: a BestEffort pod, refused under a ResourceQuota"
        assert int(platform[name]["activeDeadlineSeconds"]) > 0, f"{name} has no timeout"
    train = containers["exec-train"]["container"]["resources"]
    assert train["resourceCpuLimit"] == "{{$.inputs.parameters['pipelinechannel--step_cpu']}}"
    tasks = {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-condition-1"]["dag"]["tasks"]}
    retried = {name for name, task in tasks.items() if task.get("retryPolicy", {}).get("maxRetryCount")}
    assert retried == {"prepare", "train", "evaluate", "export", "export-2"}  # not deploy: its check is a verdict
    cached = {name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")}
    assert "deploy" not in cached and "train" not in cached and "prepare" not in cached


def test_the_train_step_knows_its_pod_and_has_shm_and_gpu_scheduling() -> None:
    _, platform = _executors()
    train = platform["exec-train"]
    assert {e["name"]: e["fieldPath"] for e in train["fieldPathAsEnv"]} == {
        "ASYMVAE_NAMESPACE": "metadata.namespace",
        "ASYMVAE_POD_NAME": "metadata.name",
        "ASYMVAE_POD_UID": "metadata.uid",
    }
    assert train["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}
    ]
    assert train["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"},
        {"tolerationJson": {"componentInputParameter": "gpu_tolerations"}},
    ]
    assert train["nodeSelector"] == {"nodeSelectorJson": {"componentInputParameter": "step_node_selector"}}
    deploy = platform["exec-deploy"]
    assert deploy["fieldPathAsEnv"] == [{"fieldPath": "metadata.namespace", "name": "ASYMVAE_NAMESPACE"}]


def test_train_step_gpu_image_an_explicit_root_and_a_runs_volume(tmp_path: Path) -> None:
    out = compile_pipeline(
        tmp_path / "p.yaml", pipeline_root="s3://bucket/root", image="reg.example/asymvae:1", runs_volume="runs"
    )
    spec, platform = _docs(out)
    (mount,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]["pvcMount"]
    assert mount["mountPath"] == "/mnt/runs" and mount["pvcNameParameter"]["runtimeValue"]["constant"] == "runs"
    passed = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["output_pvc"]
    assert passed["runtimeValue"]["constant"] == "runs"
    assert spec["defaultPipelineRoot"] == "s3://bucket/root"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == "reg.example/asymvae:1"
    # the job's pods run the step's own image unless the `image` parameter names another
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == ""
    assert train["env"] == [{"name": "ASYMVAE_IMAGE", "value": "reg.example/asymvae:1"}]
    assert "ghcr.io/asymvae" not in out.read_text()
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    # the endpoint is a parameter, not a constant in the container's environment
    assert "minio-service" not in out.read_text()
