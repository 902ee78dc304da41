"""The PyTorchJob runner's create / wait / logs / cleanup against a stand-in API server (no cluster can run here).

The real `kubernetes` client talks HTTP to tests/fake_kube.py, which validates each created job against the
real CRD schema and answers successive status reads from a script.
"""

from __future__ import annotations

import pytest

from asymvae.cluster.errors import JobConflictError, JobFailedError, JobTimeoutError, KubernetesAPIError
from asymvae.cluster.pytorchjob import PyTorchJobSpec, build_pytorchjob
from asymvae.cluster.runner import PyTorchJobRunner, WaitPolicy
from asymvae.cluster.submit import run_training
from tests.fake_kube import FakeKubeServer, status
from tests.k8s_schemas import PYTORCHJOB_CRD

NS = "team-a"
JOB_PATH = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
LOG = "\n".join(f"step {i}/40 loss=0.{90 - i}" for i in range(1, 41))


def spec(**changes) -> PyTorchJobSpec:
    values = dict(name="run1", namespace=NS, image="asymvae:0.1.0", nodes=2, gpus_per_node=4,
                  credentials_secret="mlpipeline-minio-artifact")  # fmt: skip
    values.update(changes)
    return PyTorchJobSpec(**values)


@pytest.fixture
def fake():
    server = FakeKubeServer(PYTORCHJOB_CRD)
    with server as state:
        state.client = server.api_client()
        yield state
    assert not state.invalid_bodies, "a request body failed the CRD schema"


def runner(fake, lines=None, **policy) -> PyTorchJobRunner:
    policy = {"poll_s": 0.01, "timeout_s": 30.0, **policy}
    sink = lines.append if lines is not None else None
    return PyTorchJobRunner(fake.client, WaitPolicy(**policy), log_sink=sink)


def test_success_waits_for_succeeded_surfaces_the_master_log_and_deletes_the_job(fake):
    fake.script("run1", [{}, status("Created"), status("Created", "Running"),
                         status("Created", "Running", "Succeeded", reason="PyTorchJobSucceeded")], LOG)  # fmt: skip
    lines: list[str] = []
    out = runner(fake, lines, log_tail_lines=5).run(build_pytorchjob(spec()))
    assert out.reason == "PyTorchJobSucceeded" and not out.adopted
    assert len(fake.calls("GET", f"{JOB_PATH}/run1")) == 4  # polled until the terminal condition
    assert lines == LOG.splitlines()[-5:]  # the tail of the master's log, line by line
    (pods,) = fake.calls("GET", "/pods")[:1]
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


def test_a_failed_job_with_the_same_spec_is_replaced_under_adopt(fake):
    job = build_pytorchjob(spec())
    fake.add_existing(job, [status("Failed")])
    fake.script("run1", [status("Succeeded")])
    out = runner(fake).run(job)
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


def test_an_invalid_job_is_rejected_with_the_servers_message(fake):
    job = build_pytorchjob(spec())
    job["spec"]["runPolicy"]["cleanPodPolicyy"] = "All"
    with pytest.raises(KubernetesAPIError, match="HTTP 422.*cleanPodPolicyy"):
        runner(fake).run(job)
    assert fake.invalid_bodies
    fake.invalid_bodies.clear()  # expected here


def test_run_training_dispatches_to_the_cluster(fake):
    fake.script("run1", [status("Succeeded", reason="PyTorchJobSucceeded")])
    out = run_training(spec(), "kubeflow", WaitPolicy(poll_s=0.01), fake.client)
    assert out["launcher"] == "kubeflow" and out["reason"] == "PyTorchJobSucceeded"
