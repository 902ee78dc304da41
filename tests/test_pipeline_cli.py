"""`asymvae pipeline submit|schedule` drive the real kfp.Client against a stand-in KFP API; parameter parsing."""

from __future__ import annotations

import pytest

from asymvae.cli import main
from asymvae.commands.pipeline import parse_params
from asymvae.config import ConfigError
from tests.kfp_standin import KFPStandInServer


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json of the developer's
    for var in ("KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    with KFPStandInServer() as (state, url):
        yield state, url


def test_parse_params() -> None:
    assert parse_params(["nodes=2", "launcher=kubeflow", 'overrides=["train.max_steps=5"]', "deploy_model=true"]) == {
        "nodes": 2,
        "launcher": "kubeflow",
        "overrides": ["train.max_steps=5"],
        "deploy_model": True,
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_params(["nodes"])


def test_submit_sends_the_compiled_pipeline(kfp_api, capsys) -> None:
    state, url = kfp_api
    with pytest.raises(SystemExit) as done:
        main(["pipeline", "submit", "--host", url, "--experiment", "retrain", "--param", "nodes=2",
              "--param", "launcher=kubeflow", "--pipeline-root", "s3://asymvae/pipeline-root"])  # fmt: skip
    assert done.value.code == 0
    (exp,) = state.calls("POST", "/experiments")
    assert exp.body["display_name"] == "retrain"
    (run,) = state.calls("POST", "/runs")
    body = run.body
    assert body["experiment_id"] == "exp-1"
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "asymvae"
    assert {"prepare", "train", "evaluate"} <= set(spec["root"]["dag"]["tasks"])
    # the kubernetes platform config (Secret references, PVC) travels with the spec
    executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["secretAsEnv"][0]["secretName"] == "mlpipeline-minio-artifact"
    assert body["runtime_config"]["parameters"] == {"nodes": 2, "launcher": "kubeflow"}
    assert body["runtime_config"]["pipeline_root"] == "s3://asymvae/pipeline-root"
    assert "Started run run-1" in capsys.readouterr().out


def test_schedule_is_a_cron_recurring_run_without_overlap_or_catchup(kfp_api, capsys) -> None:
    state, url = kfp_api
    with pytest.raises(SystemExit) as done:
        main(["pipeline", "schedule", "--host", url, "--cron", "0 0 3 * * *", "--param", "config=demo"])
    assert done.value.code == 0
    (rec,) = state.calls("POST", "/recurringruns")
    body = rec.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "asymvae"
    assert body["runtime_config"]["parameters"] == {"config": "demo"}
    assert "at most one run at a time" in capsys.readouterr().out


def test_schedule_rejects_a_five_field_cron(kfp_api, capsys) -> None:
    _, url = kfp_api
    with pytest.raises(SystemExit) as done:
        main(["pipeline", "schedule", "--host", url, "--cron", "0 3 * * *"])
    assert done.value.code == 2
    assert "6 fields" in capsys.readouterr().err


def test_unknown_pipeline_parameter_is_a_user_error(kfp_api, capsys) -> None:
    _, url = kfp_api
    with pytest.raises(SystemExit) as done:
        main(["pipeline", "submit", "--host", url, "--param", "gpu=8"])
    assert done.value.code == 2
    assert "unknown pipeline parameter(s) gpu" in capsys.readouterr().err


def test_run_local_summary_lists_artifacts_in_pipeline_order(tmp_path) -> None:
    from asymvae_pipelines.local import LocalArtifact, summary_lines

    metrics = {"masked/baseline/pre_error": 0.0141, "masked/asymmetric/pre_error": 0.00229, "pre_error_ratio": 0.162}
    arts = [
        LocalArtifact("export-2", "exported", "/r/export-2/exported", {}),
        LocalArtifact("evaluate", "metrics", "/r/evaluate/metrics", metrics),
        LocalArtifact("prepare", "dataset", "/r/prepare/dataset", {}),
    ]
    lines = summary_lines(tmp_path, arts, 12.3)
    assert lines[0] == f"Pipeline finished in 12 s; artifacts under {tmp_path}:"
    assert lines[1].split() == ["prepared", "dataset", "/r/prepare/dataset"]
    assert lines[2].split() == ["metrics", "/r/evaluate/metrics"]
    assert lines[3].split() == ["pre_error", "baseline", "1.410e-02,", "asymmetric", "2.290e-03", "(ratio", "0.162)"]
    assert lines[4].split() == ["export", "(Triton)", "/r/export-2/exported"]
