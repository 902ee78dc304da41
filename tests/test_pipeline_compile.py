"""The compiled pipeline: committed YAML up to date, credentials only by reference, the expected DAG."""

from __future__ import annotations

from pathlib import Path

import yaml

from asymvae.commands.pipeline import COMMITTED_YAML, compile_pipeline


def _docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_is_not_stale(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "p.yaml")
    assert fresh.read_text() == COMMITTED_YAML.read_text(), (
        "pipelines/asymvae_pipeline.yaml is stale: run `asymvae pipeline compile` and commit it"
    )


def test_compile_is_deterministic(tmp_path: Path) -> None:
    a, b = compile_pipeline(tmp_path / "a.yaml"), compile_pipeline(tmp_path / "b.yaml")
    assert a.read_text() == b.read_text()


def test_dag_and_artifacts() -> None:
    spec, _ = _docs(COMMITTED_YAML)
    assert spec["defaultPipelineRoot"] == "minio://mlpipeline/v2/artifacts"
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
    assert types["comp-train"] == {"model": "system.Model"}
    assert types["comp-evaluate"] == {
        "metrics": "system.Metrics",
        "report": "system.HTML",
        "table": "system.Markdown",
        "results": "system.Artifact",
    }
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("config", "overrides", "source", "nodes", "gpus_per_node", "launcher", "deploy_model"):
        assert name in params


def test_credentials_are_secret_references_only() -> None:
    text = COMMITTED_YAML.read_text()
    _, platform = _docs(COMMITTED_YAML)
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-prepare", "exec-train"):
        secret = execs[name]["secretAsEnv"][0]
        assert secret["secretName"] == "mlpipeline-minio-artifact"
        assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }
    assert execs["exec-train"]["pvcMount"][0]["mountPath"] == "/mnt/runs"
    # no value of the keys anywhere: the only AWS_ names are env var names in secretAsEnv
    assert "minio123" not in text and "REPLACE-ME" not in text


def test_train_step_gpu_and_image(tmp_path: Path) -> None:
    out = compile_pipeline(tmp_path / "p.yaml", pipeline_root="s3://bucket/root", image="reg.example/asymvae:1")
    spec, _ = _docs(out)
    assert spec["defaultPipelineRoot"] == "s3://bucket/root"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == "reg.example/asymvae:1"
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == "reg.example/asymvae:1"
    assert "ghcr.io/asymvae" not in out.read_text()
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env == {"S3_ENDPOINT": "minio-service.kubeflow:9000", "S3_USE_HTTPS": "0"}


def test_library_never_imports_kfp() -> None:
    root = Path(__file__).resolve().parents[1] / "asymvae"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "pipeline.py" and path.parent.name == "commands":
            continue  # the CLI command imports kfp inside its functions only
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("import kfp", "from kfp")):
                offenders.append(str(path))
    assert offenders == []
