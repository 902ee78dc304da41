"""The job runner's create / wait / restarts / logs / cleanup against a stand-in API server (no cluster can run
here), for PyTorchJobs and Trainer v2 TrainJobs.

The real `kubernetes` client talks HTTP to tests/support/fake_kube.py, which decodes each created job as the API
server does (unknown fields pruned, or refused under strict field validation), validates it against the
real CRD schema (and Trainer's webhook rules), answers successive status reads from a script, refuses a
service account acting outside its namespace, and serves API discovery for the kinds it is told are installed
(here both kinds, unless a test says otherwise), with Trainer v2.3's TrainJob or v2.1.0's (Kubeflow 26.03).
"""

from __future__ import annotations

import pytest

from asymvae.cluster.errors import (
    JobConflictError,
    JobFailedError,
    JobInterrupted,
    JobTimeoutError,
    KindNotServedError,
)
from asymvae.cluster.jobspec import OwnerPod, TrainingJobSpec
from asymvae.cluster.pytorchjob import build_pytorchjob
from asymvae.cluster.runner import KINDS, TrainingJobRunner, WaitPolicy
from asymvae.cluster.submit import BUILDERS, run_training
from asymvae.cluster.trainjob import POD_TEMPLATE_OVERRIDES, build_trainjob, form_of, node_pod_template
from asymvae.kube import KubernetesAPIError
from tests.support.crd import schema_errors
from tests.support.fake_kube import STOCK, WITH_TRAINING_OPERATOR, FakeKubeServer, PodState, status
from tests.support.k8s_schemas import TRAINJOB_V21_CRD

NS = "team-a"
JOB_PATH = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
LOG = "\n".join(f"step {i}/40 loss=0.{90 - i}" for i in range(1, 41))


def spec(**changes) -> TrainingJobSpec:
    values = dict(name="run1", namespace=NS, image="asymvae:0.1.0", nodes=2, gpus_per_node=4,
                  credentials_secret="mlpipeline-minio-artifact")  # fmt: skip
    values.update(changes)
    return TrainingJobSpec(**values)


@pytest.fixture
def fake():
    server = FakeKubeServer(service_account=(NS, "default-editor"), served=WITH_TRAINING_OPERATOR)
    with server as state:
        state.client = server.api_client()
        yield state
    assert not state.invalid_bodies, "a request body failed the CRD schema"
    assert not state.pruned, "the API server would have dropped fields of a request body"


def runner(fake, lines=None, **policy) -> TrainingJobRunner:
    policy = {"poll_s": 0.01, "timeout_s": 30.0, **policy}
    sink = lines.append if lines is not None else None
    return TrainingJobRunner(fake.client, WaitPolicy(**policy), log_sink=sink)


def test_success_waits_for_succeeded_surfaces_the_master_log_and_deletes_the_job(fake):
    fake.script("run1", [{}, status("Created"), status("Created", "Running"),
                         status("Created", "Running", "Succeeded", reason="PyTorchJobSucceeded")], LOG)  # fmt: skip
    lines: list[str] = []
    out = runner(fake, lines, log_tail_lines=5).run(build_pytorchjob(spec()))
    assert out.reason == "PyTorchJobSucceeded" and not out.adopted
    assert len(fake.calls("GET", f"{JOB_PATH}/run1")) == 4  # polled until the terminal condition
    assert lines == LOG.splitlines()[-5:]  # the tail of the master's log, line by line
    pods = [r for r in fake.calls("GET") if r.path.endswith("/pods")][-1]  # the last list: rank 0's, for its log
    assert pods.query["labelSelector"] == [
        "training.kubeflow.org/job-name=run1,training.kubeflow.org/replica-type=master"
    ]
    assert fake.calls("GET", "/log")[0].query["container"] == ["pytorch"]
    assert len(fake.calls("DELETE", f"{JOB_PATH}/run1")) == 1 and not fake.jobs
    (post,) = fake.calls("POST", JOB_PATH)
    assert post.body == build_pytorchjob(spec())  # exactly the pure builder's output went over the wire


def test_failure_raises_with_the_operators_reason_and_keeps_the_job(fake):
    fake.script("run1", [status("Created", "Running"),
                         status("Created", "Running", "Failed", reason="PyTorchJobFailed",
                                message="PyTorchJob team-a/run1 is failed because 1 Master replica(s) failed.")],
                "Traceback ...\nasymvae.data.sources.DataSourceError: no images in s3://x")  # fmt: skip
    with pytest.raises(JobFailedError, match="1 Master replica") as info:
        runner(fake).run(build_pytorchjob(spec()))
    assert info.value.reason == "PyTorchJobFailed"
    assert "DataSourceError: no images" in str(info.value)  # the master's last lines are in the message
    assert not fake.calls("DELETE") and ("team-a", "run1") in fake.jobs  # cleanup=on_success keeps failed jobs


def test_cleanup_always_deletes_a_failed_job(fake):
    fake.script("run1", [status("Failed", reason="PyTorchJobFailed")])
    with pytest.raises(JobFailedError):
        runner(fake, cleanup="always").run(build_pytorchjob(spec()))
    assert len(fake.calls("DELETE", f"{JOB_PATH}/run1")) == 1


def test_timeout_deletes_the_job_and_raises(fake):
    fake.script("run1", [status("Created", "Running")], LOG)
    with pytest.raises(JobTimeoutError, match="did not finish within 0.2 s"):
        runner(fake, timeout_s=0.2).run(build_pytorchjob(spec()))
    assert len(fake.calls("GET", f"{JOB_PATH}/run1")) >= 2
    assert len(fake.calls("DELETE", f"{JOB_PATH}/run1")) == 1 and not fake.jobs


def test_timeout_with_cleanup_never_leaves_the_job_running(fake):
    fake.script("run1", [status("Running")])
    with pytest.raises(JobTimeoutError, match="left running"):
        runner(fake, timeout_s=0.1, cleanup="never").run(build_pytorchjob(spec()))
    assert not fake.calls("DELETE")


def test_already_exists_with_the_same_spec_is_adopted_not_recreated(fake):
    job = build_pytorchjob(spec())
    fake.add_existing(job, [status("Running"), status("Running", "Succeeded")], LOG)
    out = runner(fake).run(job)
    assert out.adopted
    assert len(fake.calls("POST")) == 1  # the 409, then no second create
    assert fake.calls("GET", f"{JOB_PATH}/run1")


def test_already_exists_with_another_spec_is_a_conflict_under_adopt(fake):
    fake.add_existing(build_pytorchjob(spec(gpus_per_node=1)), [status("Running")])
    with pytest.raises(JobConflictError, match="different spec"):
        runner(fake).run(build_pytorchjob(spec()))
    assert not fake.calls("DELETE")


def test_a_failed_job_with_the_same_spec_is_reported_not_started_again(fake):
    """A retried step whose job failed meanwhile (its pod was lost before it saw the end) reports that failure
    and starts nothing: the training itself failed, and would fail again on the same GPUs."""
    job = build_pytorchjob(spec())
    fake.add_existing(
        job, [status("Running", "Failed", reason="PyTorchJobFailed", message="1 Master replica(s) failed.")],
        "Traceback ...\nasymvae.config.ConfigError: train.batch_size must be > 0",
    )  # fmt: skip
    earlier = fake.jobs[(NS, "run1")]
    fake.script("run1", [status("Succeeded")])  # what a second training would report
    with pytest.raises(JobFailedError, match="failed before this attempt; a retry does not train again") as info:
        runner(fake).run(job)
    assert info.value.reason == "PyTorchJobFailed"
    assert "1 Master replica(s) failed." in str(info.value) and "batch_size must be > 0" in str(info.value)
    assert [r.method for r in fake.requests if r.path.startswith(JOB_PATH)] == ["POST", "GET"]  # the 409, a read
    assert not fake.calls("DELETE") and not fake.calls("PATCH")
    assert fake.jobs == {(NS, "run1"): earlier}  # the earlier job, kept as it was for `kubectl describe`


def test_a_failed_job_is_still_replaced_when_asked_to(fake):
    job = build_pytorchjob(spec())
    fake.add_existing(job, [status("Failed")])
    fake.script("run1", [status("Succeeded")])
    out = runner(fake, on_exists="replace").run(job)
    assert not out.adopted
    assert [r.method for r in fake.requests if r.path.startswith(JOB_PATH)][:4] == ["POST", "GET", "DELETE", "GET"]
    assert len(fake.calls("POST")) == 2


def test_replace_deletes_an_existing_job_and_creates_it_anew(fake):
    fake.add_existing(build_pytorchjob(spec(gpus_per_node=1)), [status("Running")])
    fake.script("run1", [status("Succeeded")])
    runner(fake, on_exists="replace").run(build_pytorchjob(spec()))
    posts = fake.calls("POST")
    assert (
        len(posts) == 2
        and posts[1].body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"][
            "limits"
        ]["nvidia.com/gpu"]
        == 4
    )


def test_fail_policy_refuses_an_existing_job(fake):
    fake.add_existing(build_pytorchjob(spec()), [status("Running")])
    with pytest.raises(JobConflictError, match="already exists"):
        runner(fake, on_exists="fail").run(build_pytorchjob(spec()))


def test_a_field_the_crd_lacks_is_refused_in_one_line_naming_it_not_dropped(fake):
    """Every create asks for strict field validation: without it the API server would drop the misspelt field
    with a warning only, and the job would run without it."""
    job = build_pytorchjob(spec())
    job["spec"]["runPolicy"]["cleanPodPolicyy"] = "All"
    with pytest.raises(KubernetesAPIError) as info:
        runner(fake).run(job)
    message = str(info.value)
    assert 'refused unknown field "spec.runPolicy.cleanPodPolicyy" (HTTP 400, strict field validation' in message
    assert "\n" not in message and not fake.jobs
    assert fake.strict_refusals == [["spec.runPolicy.cleanPodPolicyy"]]


def test_an_invalid_job_is_rejected_with_the_servers_message(fake):
    job = build_pytorchjob(spec())
    job["spec"]["runPolicy"]["cleanPodPolicy"] = 7
    with pytest.raises(KubernetesAPIError, match="HTTP 422.*cleanPodPolicy"):
        runner(fake).run(job)
    assert fake.invalid_bodies
    fake.invalid_bodies.clear()  # expected here


def test_run_training_dispatches_to_the_cluster_for_both_launchers(fake):
    fake.script("run1", [status("Complete", reason="JobSetCompleted")])
    out = run_training(spec(), "trainjob", WaitPolicy(poll_s=0.01), fake.client)
    assert out["launcher"] == "trainjob" and out["reason"] == "JobSetCompleted"
    (post,) = fake.calls("POST", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs")
    assert post.body == build_trainjob(spec()) and post.query["fieldValidation"] == ["Strict"]

    fake.script("run1", [status("Succeeded", reason="PyTorchJobSucceeded")])
    out = run_training(spec(), "pytorchjob", WaitPolicy(poll_s=0.01), fake.client)
    assert out["launcher"] == "pytorchjob" and out["reason"] == "PyTorchJobSucceeded"


# -- Trainer v2.1 (Kubeflow 26.03): its TrainJob has podTemplateOverrides, not runtimePatches -------------------


@pytest.fixture
def trainer_v21():
    server = FakeKubeServer(service_account=(NS, "default-editor"), trainer="v2.1")
    with server as state:
        state.client = server.api_client()
        yield state
    assert not state.invalid_bodies and not state.pruned


@pytest.mark.parametrize("trainer, form", [("v2.3", "runtimePatches"), ("v2.1", "podTemplateOverrides")])
def test_the_trainjob_keeps_shm_tolerations_and_node_selector_on_either_trainer(trainer, form, caplog):
    """The API server says which form its Trainer takes: v2.1's refuses spec.runtimePatches (strict field
    validation), and the job goes again as spec.podTemplateOverrides. What the server stored has /dev/shm, the
    GPU toleration and the node selector; without strict validation v2.1 would have dropped them all."""
    server = FakeKubeServer(service_account=(NS, "default-editor"), trainer=trainer)
    with server as fake, caplog.at_level("INFO", logger="asymvae.cluster.runner"):
        fake.script("run1", [status("Complete", reason="JobSetCompleted")])
        job = build_trainjob(spec(node_selector={"nvidia.com/gpu.product": "NVIDIA-H200"}))
        out = TrainingJobRunner(server.api_client(), WaitPolicy(poll_s=0.01)).run(job)
    assert out.reason == "JobSetCompleted" and not out.adopted
    assert fake.strict_refusals == ([["spec.runtimePatches"]] if trainer == "v2.1" else [])
    assert not fake.pruned and not fake.invalid_bodies
    (stored,) = fake.created
    assert form_of(stored) == form and stored["metadata"]["annotations"] == job["metadata"]["annotations"]
    if trainer == "v2.1":
        assert schema_errors(stored, TRAINJOB_V21_CRD) == []
    pod = node_pod_template(stored)["spec"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert pod["containers"] == [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert f"created TrainJob {NS}/run1 (spec.{form})" in caplog.text


def test_a_retry_on_trainer_v2_1_adopts_the_job_its_first_attempt_created(trainer_v21):
    """The earlier attempt created the job in v2.1's form; the retry builds the v2.2+ form, is refused, sends
    v2.1's form, meets the job (409) and recognises it by its spec hash, the same in both forms."""
    fake = trainer_v21
    fake.add_existing(build_trainjob(spec(), POD_TEMPLATE_OVERRIDES), [status("Running"), status("Complete")])
    out = runner(fake).run(build_trainjob(spec()))
    assert out.adopted and out.reason == "JobComplete"
    assert len(fake.calls("POST")) == 2 and fake.strict_refusals == [["spec.runtimePatches"]] and not fake.created


def test_on_trainer_v2_1_what_its_trainjob_cannot_carry_is_a_one_line_error(trainer_v21):
    with pytest.raises(KubernetesAPIError) as info:
        runner(trainer_v21).run(build_trainjob(spec(active_deadline_seconds=3600)))
    message = str(info.value)
    assert message.startswith(f"could not create TrainJob {NS}/run1: this cluster's Trainer does not know spec.")
    assert "spec.activeDeadlineSeconds needs Trainer v2.2 or later" in message and "\n" not in message
    assert len(trainer_v21.calls("POST")) == 1 and not trainer_v21.jobs


# -- API discovery: a kind the cluster does not serve is refused before anything is created -------------------


def _not_served(served: frozenset[str], build) -> KindNotServedError:
    server = FakeKubeServer(service_account=(NS, "default-editor"), served=served)
    with server as state, pytest.raises(KindNotServedError) as info:
        TrainingJobRunner(server.api_client(), WaitPolicy(poll_s=0.01)).run(build(spec()))
    assert not state.calls("POST") and not state.objects  # nothing created, not even tried
    assert "\n" not in str(info.value)
    return info.value


def test_a_pytorchjob_on_a_stock_kubeflow_names_the_missing_crd_its_install_and_the_served_launcher():
    """A stock Kubeflow serves kubeflow.org/v1 (Notebooks, Profiles) but no pytorchjobs there."""
    message = str(_not_served(STOCK, build_pytorchjob))
    assert "does not serve pytorchjobs.kubeflow.org v1 (API discovery, GET /apis/kubeflow.org/v1" in message
    assert "manifests/overlays/standalone?ref=v1.9.2" in message
    assert "launcher=trainjob (served here) or launcher=local" in message


def test_a_trainjob_without_trainer_names_its_crd_and_install():
    """Without Trainer the whole group version is not served: discovery answers 404."""
    message = str(_not_served(frozenset({"pytorchjobs", "inferenceservices"}), build_trainjob))
    assert "does not serve trainjobs.trainer.kubeflow.org v1alpha1" in message
    assert "manifests/overlays/manager?ref=v2.2.0" in message and "overlays/runtimes?ref=v2.2.0" in message
    assert "launcher=pytorchjob (served here) or launcher=local" in message


def test_with_no_training_operator_at_all_only_the_local_launcher_is_offered():
    message = str(_not_served(frozenset({"inferenceservices"}), build_trainjob))
    assert "or use launcher=local (training in the step's own pod)" in message


def test_discovery_needs_credentials_and_a_refusal_is_not_taken_for_a_missing_crd():
    server = FakeKubeServer(service_account=(NS, "default-editor"))
    with server as state, pytest.raises(KubernetesAPIError, match="HTTP 401.*credentials were rejected"):
        TrainingJobRunner(server.api_client(token=None), WaitPolicy()).run(build_trainjob(spec()))
    assert not state.calls("POST")


def test_every_cluster_launcher_has_its_kind():
    assert {k.launcher for k in KINDS.values()} == set(BUILDERS)


# -- restarts: an OOM loop ends -------------------------------------------------------------------------


@pytest.mark.parametrize("build", [build_pytorchjob, build_trainjob], ids=["pytorchjob", "trainjob"])
def test_repeated_oom_kills_end_the_job_after_max_restarts(fake, build):
    """The operator keeps the job Running while its pod is OOM-killed and restarted; the runner counts the
    restarts, and at the limit deletes the job and fails with the reason and what to change."""
    oom = [PodState(restarts=n, reason="OOMKilled", exit_code=137) for n in range(0, 6)]
    fake.script("run1", [status("Created", "Running")], LOG, pods=oom)
    with pytest.raises(JobFailedError, match=r"restarted 3 times \(limit 3\).*OOMKilled \(exit 137\).*memory") as info:
        runner(fake, max_restarts=3).run(build(spec()))
    assert info.value.reason == "TooManyRestarts"
    assert len(fake.calls("DELETE")) == 1 and not fake.jobs  # its GPUs are free
    plural = "pytorchjobs" if build is build_pytorchjob else "trainjobs"
    assert len(fake.calls("GET", f"/{plural}/run1")) == 4  # restart counts 0, 1, 2, 3: stopped at the 4th read


def test_restarts_below_the_limit_do_not_stop_a_job_that_then_succeeds(fake):
    pods = [PodState(), PodState(restarts=1, reason="OOMKilled", exit_code=137)]
    fake.script("run1", [status("Running"), status("Running"), status("Running", "Succeeded")], LOG, pods=pods)
    assert runner(fake, max_restarts=3).run(build_pytorchjob(spec())).reason == "JobSucceeded"


def test_the_pytorchjob_restarts_in_place_so_the_operator_counts_restarts_too():
    """training-operator v1 counts container restarts against backoffLimit only for OnFailure/Always; with
    ExitCode it recreates pods and never stops an OOM loop. The default is OnFailure."""
    job = build_pytorchjob(spec())
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert replica["restartPolicy"] == "OnFailure"
    assert job["spec"]["runPolicy"]["backoffLimit"] == 3


# -- ownership and stopping ------------------------------------------------------------------------------


def test_the_job_is_owned_by_the_steps_pod(fake):
    fake.script("run1", [status("Succeeded")])
    runner(fake).run(build_pytorchjob(spec(owner=OwnerPod("train-pod", "uid-1"))))
    (post,) = fake.calls("POST", JOB_PATH)
    assert post.body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "train-pod", "uid": "uid-1"}
    ]


def test_an_adopted_job_is_re_owned_by_the_retried_steps_pod(fake):
    """A retried step runs in a new pod: the job it adopts must follow it, or deleting the first pod would
    garbage-collect the job under the retry."""
    fake.add_existing(build_pytorchjob(spec(owner=OwnerPod("try-1", "uid-1"))), [status("Running", "Succeeded")])
    out = runner(fake).run(build_pytorchjob(spec(owner=OwnerPod("try-2", "uid-2"))))
    assert out.adopted and len(fake.calls("POST")) == 1  # adopted by its spec hash: no duplicate
    (patch,) = fake.calls("PATCH", f"{JOB_PATH}/run1")
    assert patch.body == {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "try-2",
                                                            "uid": "uid-2"}]}}  # fmt: skip


def test_an_interrupted_wait_deletes_the_job(fake):
    fake.script("run1", [status("Running")])
    reads = []

    def sleep(seconds: float) -> None:
        reads.append(seconds)
        if len(reads) == 2:
            raise JobInterrupted("received SIGTERM")

    job_runner = TrainingJobRunner(fake.client, WaitPolicy(poll_s=0.01, timeout_s=30), sleep=sleep)
    with pytest.raises(JobInterrupted):
        job_runner.run(build_pytorchjob(spec()))
    assert len(fake.calls("DELETE", f"{JOB_PATH}/run1")) == 1 and not fake.jobs


# -- namespaces: a service account acts only in its own ---------------------------------------------------


def test_a_job_in_another_namespace_is_refused_as_rbac_refuses_it(fake):
    with pytest.raises(KubernetesAPIError, match=r"HTTP 403.*cannot create resource \"pytorchjobs\".*asymvae"):
        runner(fake).run(build_pytorchjob(spec(namespace="asymvae")))
    assert fake.refused and not fake.jobs
