"""`asymvae pipeline submit|schedule` drive the real kfp.Client against a stand-in KFP API (single- and
multi-user), the way a Kubeflow user works: a namespace, credentials, one named pipeline with versions."""

from __future__ import annotations

import pytest

from asymvae.cli import main
from tests.support.kfp_standin import TOKEN, KFPStandInServer

NS = "kubeflow-user-example-com"
IMAGE = "registry.example/team/asymvae:0.1.0"


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json of the developer's
    for var in ("KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                "KF_PIPELINES_SA_TOKEN_PATH"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def kfp_api(isolated):
    with KFPStandInServer() as (state, url):
        yield state, url


@pytest.fixture
def multi_user(isolated):
    with KFPStandInServer(multi_user=True) as (state, url):
        yield state, url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_pipeline_parameters_are_flags_from_the_compiled_signature() -> None:
    """`--pipeline.NAME` flags: typed like the compiled parameter, values read as YAML, only given ones passed."""
    from asymvae.cli import build_parser
    from asymvae.commands.pipeline import pipeline_params
    from asymvae_pipelines.parameters import compiled_parameters

    argv = ["pipeline", "submit", "--host", "h", "--image", "i", "--pipeline.nodes", "2", "--pipeline.launcher",
            "pytorchjob", "--pipeline.overrides", "[train.max_steps=5]", "--pipeline.deploy-model"]  # fmt: skip
    assert pipeline_params(build_parser().parse_args(argv)) == {
        "nodes": 2, "launcher": "pytorchjob", "overrides": ["train.max_steps=5"], "deploy_model": True
    }  # fmt: skip
    names = {name for name, *_ in compiled_parameters()}
    assert {"nodes", "overrides", "prepare_overrides", "deploy_model"} <= names
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv[:6], "--pipeline.nodes", "two"])


def test_submit_registers_the_pipeline_and_runs_its_version(kfp_api, capsys) -> None:
    state, url = kfp_api
    code, out, _ = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--experiment", "retrain",
                       "--pipeline.nodes=2", "--pipeline.launcher=pytorchjob",
                       "--pipeline-root", "s3://asymvae/pipeline-root")  # fmt: skip
    assert code == 0
    (pipeline,) = state.pipelines.values()
    assert pipeline["display_name"] == "asymvae"
    (version,) = state.versions.values()
    spec = version["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "asymvae" and {"prepare", "train", "evaluate"} <= set(
        spec["root"]["dag"]["tasks"]
    )
    (exp,) = state.calls("POST", "/experiments")
    assert exp.body["display_name"] == "retrain"
    (created,) = state.calls("POST", "/runs")
    body = created.body
    assert body["experiment_id"] == "exp-1" and "pipeline_spec" not in body
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline["pipeline_id"],
                                                  "pipeline_version_id": version["pipeline_version_id"]}  # fmt: skip
    assert body["runtime_config"]["parameters"] == {"nodes": 2, "launcher": "pytorchjob"}
    assert body["runtime_config"]["pipeline_root"] == "s3://asymvae/pipeline-root"
    assert "Started run run-1 of pipeline asymvae" in out
    # every step, and through the train step's own image the training job, run the one named with --image
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}
    for step in ("exec-train", "exec-deploy"):  # the training job's and the predictor's default image
        env = spec["deploymentSpec"]["executors"][step]["container"]["env"]
        assert env == [{"name": "ASYMVAE_IMAGE", "value": IMAGE}]


def test_submit_and_schedule_need_the_image_the_cluster_pulls(kfp_api, capsys) -> None:
    """No image is published: a run without --image would only fail later with ImagePullBackOff."""
    _, url = kfp_api
    for action in (["submit"], ["schedule", "--cron", "0 0 3 * * *"]):
        code, _, err = run(capsys, "pipeline", *action, "--host", url)
        assert code == 2 and "the following arguments are required: --image" in err


def test_multi_user_kfp_needs_a_namespace(multi_user, capsys) -> None:
    _, url = multi_user
    code, _, err = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--token", TOKEN)
    assert code == 2 and "multi-user Kubeflow Pipelines: pass --namespace" in err


def test_the_stand_in_refuses_an_experiment_without_a_namespace(multi_user) -> None:
    """What the client's check above spares the user: multi-user KFP's own refusal."""
    import kfp

    _, url = multi_user
    client = kfp.Client(host=url, existing_token=TOKEN)
    with pytest.raises(Exception, match="namespace"):
        client._experiment_api.experiment_service_create_experiment(experiment={"display_name": "x"})
    with pytest.raises(Exception, match="401|Unauthenticated"):
        kfp.Client(host=url, namespace=NS).list_experiments(namespace=NS)


def test_multi_user_submit_with_a_token_file_then_a_new_version(multi_user, capsys, tmp_path, monkeypatch) -> None:
    """In a Kubeflow notebook KF_PIPELINES_SA_TOKEN_PATH names the projected token: nothing else to pass.
    Registering twice reuses the version; a changed package becomes a new version of the same pipeline."""
    state, url = multi_user
    token = tmp_path / "token"
    token.write_text(TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    for _ in range(2):
        code, out, _ = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--namespace", NS)
        assert code == 0
    assert "already registered" in out
    code, out, _ = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--namespace", NS,
                       "--pipeline-root", f"minio://mlpipeline/private-artifacts/{NS}/v2/artifacts")  # fmt: skip
    assert code == 0 and "(uploaded)" in out
    (pipeline,) = state.pipelines.values()
    assert pipeline["namespace"] == NS
    versions = sorted(state.versions.values(), key=lambda v: v["created_at"])
    assert versions[0]["display_name"] == "asymvae"  # the upload's version, named by KFP after the pipeline
    assert versions[1]["display_name"].startswith("asymvae-0.1.0-")  # then uploaded as a version
    assert "First version: asymvae-0.1.0-" in pipeline["description"]
    assert {r.headers.get("authorization") for r in state.requests if "healthz" not in r.path} == {f"Bearer {TOKEN}"}
    assert {e["namespace"] for e in state.experiments.values()} == {NS}
    runs = [r.body["pipeline_version_reference"]["pipeline_version_id"] for r in state.calls("POST", "/runs")]
    assert runs == [versions[0]["pipeline_version_id"]] * 2 + [versions[1]["pipeline_version_id"]]


def test_a_missing_token_file_is_a_user_error(multi_user, capsys) -> None:
    _, url = multi_user
    code, _, err = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--namespace", NS,
                       "--token-file", "/nope/token")  # fmt: skip
    assert code == 2 and "token file /nope/token does not exist" in err


def test_schedule_is_a_cron_recurring_run_of_the_registered_version(multi_user, capsys) -> None:
    state, url = multi_user
    code, out, _ = run(capsys, "pipeline", "schedule", "--host", url, "--image", IMAGE, "--namespace", NS,
                       "--token", TOKEN, "--cron", "0 0 3 * * *", "--pipeline.config=demo")  # fmt: skip
    assert code == 0
    (rec,) = state.calls("POST", "/recurringruns")
    body = rec.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-1" and state.experiments["exp-1"]["namespace"] == NS
    (version,) = state.versions.values()
    assert body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert body["runtime_config"]["parameters"] == {"config": "demo"}
    assert "at most one run at a time" in out


def test_schedule_rejects_a_five_field_cron(kfp_api, capsys) -> None:
    _, url = kfp_api
    code, _, err = run(capsys, "pipeline", "schedule", "--host", url, "--image", IMAGE, "--cron", "0 3 * * *")
    assert code == 2 and "6 fields" in err


def test_unknown_pipeline_parameter_is_a_user_error(kfp_api, capsys) -> None:
    _, url = kfp_api
    code, _, err = run(capsys, "pipeline", "submit", "--host", url, "--image", IMAGE, "--pipeline.gpu=8")
    assert code == 2 and "did you mean --pipeline.step-gpus?" in err


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
