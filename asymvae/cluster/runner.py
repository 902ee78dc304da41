"""Create a training job (PyTorchJob or TrainJob), wait for it to succeed or fail within a deadline, watch its
pods' restarts, surface rank 0's logs, clean up.

Policies, chosen for a pipeline step that may be retried or stopped:
- Before anything is created, the cluster's API discovery must list the job's kind (its CRD installed);
  otherwise KindNotServedError names the CRD, how to install it and the launchers the cluster does serve.
- The job is created with strict field validation: a field the cluster's CRD lacks is refused (one line
  naming it) instead of pruned, so a job never runs without part of its spec. A TrainJob refused for
  `spec.runtimePatches` (Trainer v2.1, which Kubeflow 26.03 installs) is sent once more in v2.1's form,
  `spec.podTemplateOverrides` (asymvae.cluster.trainjob.in_form); the log names the form used.
- An existing job of the same name (HTTP 409) is handled per `on_exists`:
  `adopt` (default) takes over a job created from the same spec (same `asymvae/spec-hash` annotation, the
  same in both TrainJob forms) that is running or has succeeded, so a retried step neither duplicates nor
  loses a run; a failed one is reported
  (JobFailedError with its reason and rank 0's last lines) and left as it is: a retry never starts a training
  again after the training itself failed. A job with a different spec is a conflict (JobConflictError).
  `replace` deletes whatever exists and creates anew. `fail` raises JobConflictError. An adopted job is
  re-owned by this step's pod (its `ownerReferences` patched), so the earlier pod's deletion no longer takes
  the job with it.
- Restarts: every poll counts the restarts of the job's pods (container restarts plus pods that ended
  Failed); at `max_restarts` the job is deleted and the step fails, naming the last termination reason
  (e.g. OOMKilled). This ends a loop of OOM kills whatever the operator's own restart rules.
- JobInterrupted (SIGTERM, see asymvae.cluster.interrupt) or Ctrl-C while waiting deletes the job.
- The job is deleted after it ends per `cleanup`: `on_success` (default: a failed job stays for
  `kubectl describe`; the operator's TTL removes it later), `always`, `never`.
  A job past the deadline is deleted (it would hold its GPUs) unless cleanup is `never`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from urllib3.exceptions import HTTPError

from asymvae.cluster import pytorchjob, trainjob
from asymvae.cluster.discovery import served_resources
from asymvae.cluster.errors import (
    JobConflictError,
    JobFailedError,
    JobInterrupted,
    JobTimeoutError,
    JobVanishedError,
    KindNotServedError,
)
from asymvae.cluster.jobspec import SPEC_HASH_ANNOTATION
from asymvae.extras import require
from asymvae.kube import KubernetesAPIError, api_message, load_api_client

log = logging.getLogger(__name__)

_LAUNCHERS = "running training jobs on Kubernetes (the PyTorchJob and TrainJob launchers)"
# The whole module talks to the Kubernetes API: importing it needs the kubeflow extra.
k8s = require("kubernetes.client", "kubeflow", _LAUNCHERS)
ApiException = require("kubernetes.client.rest", "kubeflow", _LAUNCHERS).ApiException

ON_EXISTS = ("adopt", "replace", "fail")
RETRY_STOPS = "a retry does not train again after the training itself failed (fix the cause, then start a new run)"
CLEANUP = ("on_success", "always", "never")


@dataclass(frozen=True)
class JobKind:
    """How the runner finds, reads and judges one kind of training job."""

    kind: str
    group: str
    version: str
    plural: str
    succeeded: str
    """The condition type that means success (`Succeeded` for a PyTorchJob, `Complete` for a TrainJob)."""
    container: str
    """The training container in each pod."""
    pod_label: str
    """Label whose value is the job's name on every pod of the job."""
    rank0_labels: tuple[tuple[str, str], ...]
    """Further labels that pick the pod running global rank 0."""
    launcher: str
    """The train step's launcher that builds this kind (asymvae.cluster.submit)."""
    install: str
    """How to install the operator that serves this kind, for the message when the cluster does not."""

    @property
    def crd(self) -> str:
        """The name of the kind's CustomResourceDefinition, e.g. `trainjobs.trainer.kubeflow.org`."""
        return f"{self.plural}.{self.group}"

    def pods(self, name: str) -> str:
        """Label selector of all the job's pods."""
        return f"{self.pod_label}={name}"

    def rank0(self, name: str) -> str:
        """Label selector of the pod running rank 0."""
        return ",".join([self.pods(name), *(f"{k}={v}" for k, v in self.rank0_labels)])


PYTORCHJOB = JobKind(
    pytorchjob.KIND,
    pytorchjob.GROUP,
    pytorchjob.VERSION,
    pytorchjob.PLURAL,
    "Succeeded",
    pytorchjob.CONTAINER_NAME,
    pytorchjob.JOB_NAME_LABEL,
    ((pytorchjob.REPLICA_TYPE_LABEL, "master"),),
    "pytorchjob",
    # kubeflow/trainer (formerly kubeflow/training-operator), tag v1.9.2: manifests/overlays/standalone.
    "install the training operator v1.9: kubectl apply --server-side -k "
    '"https://github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=v1.9.2"',
)
TRAINJOB = JobKind(
    trainjob.KIND,
    trainjob.GROUP,
    trainjob.VERSION,
    trainjob.PLURAL,
    "Complete",
    trainjob.NODE,
    trainjob.JOBSET_NAME_LABEL,
    ((trainjob.COMPLETION_INDEX_LABEL, "0"),),
    "trainjob",
    # kubeflow/trainer v2.2.0 (its CHANGELOG gives this form for each release): manifests/overlays/manager and
    # overlays/runtimes (the torch-distributed ClusterTrainingRuntime). v2.1.0 (Kubeflow 26.03) works too: the
    # runner then writes the job in v2.1's form (see TrainingJobRunner._post).
    "install Kubeflow Trainer v2.1.0 or later and its runtimes, e.g.: kubectl apply --server-side -k "
    '"https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.2.0" && kubectl apply '
    '--server-side -k "https://github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=v2.2.0"',
)
KINDS = {(f"{k.group}/{k.version}", k.kind): k for k in (PYTORCHJOB, TRAINJOB)}
STRICT = "Strict"
"""The `fieldValidation` of every create: the API server refuses a field the kind's CRD lacks (HTTP 400) instead
of pruning it with only a warning (its default, `Warn`), so that a job never runs without a part of its spec."""
_STRICT_ERROR = re.compile(r"strict decoding error: (.*)$")
"""How kube-apiserver words a strict field validation refusal (HTTP 400 BadRequest): k8s.io/apimachinery
pkg/runtime/error.go `strictDecodingError` ("strict decoding error: " and the errors joined by ", "), each
unknown field of a custom resource as `unknown field "PATH"` (k8s.io/apiextensions-apiserver
pkg/apiserver/customresource_handler.go, `schemaCoercingDecoder.Decode`), wrapped by k8s.io/apiserver
pkg/endpoints/handlers/rest.go `transformDecodeError` as `KIND in version "V" cannot be handled as a KIND: ...`."""
_FIELD_ERROR = re.compile(r'(\w+ field "([^"]+)")')


def job_kind(job: dict[str, Any]) -> JobKind:
    """The JobKind of a manifest, from its apiVersion and kind."""
    found = KINDS.get((job.get("apiVersion", ""), job.get("kind", "")))
    if found is None:
        known = ", ".join(f"{a}/{k}" for a, k in KINDS)
        raise ValueError(f"cannot run a {job.get('apiVersion')}/{job.get('kind')}; known: {known}")
    return found


@dataclass
class WaitPolicy:
    """How the runner treats an existing job, how long it waits, and what it deletes."""

    timeout_s: float = 48 * 3600.0
    """Deadline for the job to reach Succeeded or Failed, from submission."""
    poll_s: float = 15.0
    """Seconds between status reads."""
    on_exists: str = "adopt"
    """A job of the same name exists: `adopt` (same spec), `replace`, or `fail` (see the module docstring)."""
    cleanup: str = "on_success"
    """Delete the job when it ends: `on_success`, `always`, `never`."""
    max_restarts: int | None = 3
    """Restarts of the job's pods (container restarts + failed pods) at which the job is deleted and the step
    fails; None: no limit (the operator's own rules and the deadline still apply)."""
    log_tail_lines: int | None = 200
    """Lines of rank 0's log to surface at the end (None: all of it)."""
    request_timeout_s: float = 30.0
    """Timeout of each API request."""

    def __post_init__(self) -> None:
        if self.on_exists not in ON_EXISTS:
            raise ValueError(f"on_exists must be one of {ON_EXISTS}, got {self.on_exists!r}")
        if self.cleanup not in CLEANUP:
            raise ValueError(f"cleanup must be one of {CLEANUP}, got {self.cleanup!r}")
        if self.timeout_s <= 0 or self.poll_s <= 0:
            raise ValueError("timeout_s and poll_s must be > 0")
        if self.max_restarts is not None and self.max_restarts < 1:
            raise ValueError(f"max_restarts must be >= 1 or None, got {self.max_restarts}")


@dataclass
class JobOutcome:
    """A finished (Succeeded) job."""

    name: str
    namespace: str
    reason: str
    """The success condition's reason."""
    message: str
    logs: str
    """Rank 0's last log lines."""
    adopted: bool
    """True when an existing job was taken over instead of created."""
    seconds: float
    conditions: list[dict[str, Any]] = field(default_factory=list)


def terminal_condition(job: dict[str, Any], kind: JobKind) -> dict[str, Any] | None:
    """The job's success or Failed condition when it holds (status "True"), else None."""
    for cond in reversed((job.get("status") or {}).get("conditions") or []):
        if cond.get("type") in (kind.succeeded, "Failed") and str(cond.get("status")) == "True":
            return cond
    return None


def _latest_condition(job: dict[str, Any]) -> str:
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    return conds[-1].get("type", "?") if conds else "Pending"


@dataclass
class _Restarts:
    """Restarts of a job's pods seen so far (a recreated pod's count is kept after it is gone)."""

    by_pod: dict[str, int] = field(default_factory=dict)
    last: str = ""
    """The latest termination seen, e.g. `asymvae-train-x-master-0: OOMKilled (exit 137)`."""

    @property
    def total(self) -> int:
        return sum(self.by_pod.values())

    def update(self, pods: list[Any], container: str) -> None:
        for pod in pods:
            count = 1 if pod.status.phase == "Failed" else 0
            for status in pod.status.container_statuses or []:
                if status.name != container:
                    continue
                count += status.restart_count or 0
                ended = status.last_state.terminated if status.last_state else None
                ended = ended or (status.state.terminated if status.state else None)
                if ended is not None and (ended.exit_code or 0) != 0:
                    self.last = f"{pod.metadata.name}: {ended.reason or 'Error'} (exit {ended.exit_code})"
            key = pod.metadata.uid or pod.metadata.name
            self.by_pod[key] = max(self.by_pod.get(key, 0), count)


class TrainingJobRunner:
    """Runs one PyTorchJob or TrainJob manifest to completion against a Kubernetes API server."""

    def __init__(
        self,
        api_client: k8s.ApiClient | None = None,
        policy: WaitPolicy | None = None,
        log_sink: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        api_client = api_client or load_api_client()
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.policy = policy or WaitPolicy()
        self.log_sink = log_sink or (lambda line: log.info("[rank 0] %s", line))
        self.clock, self.sleep = clock, sleep

    # -- the whole run ---------------------------------------------------------------------------

    def run(self, job: dict[str, Any]) -> JobOutcome:
        """Create `job`, wait for success/failure, surface rank 0's logs, clean up; raise unless it succeeded."""
        kind = job_kind(job)
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        self._require_served(kind, f"{ns}/{name}")
        start = self.clock()
        deadline = start + self.policy.timeout_s
        try:
            adopted = self._create(kind, job, deadline)
            final = self._wait(kind, name, ns, deadline)
        except (JobInterrupted, KeyboardInterrupt):
            log.warning("%s %s/%s: interrupted, deleting it", kind.kind, ns, name)
            self._delete(kind, name, ns)
            raise
        except JobTimeoutError:
            self._surface_logs(kind, name, ns)
            if self.policy.cleanup != "never":
                self._delete(kind, name, ns)
            raise
        cond = terminal_condition(final, kind) or {}
        logs = self._surface_logs(kind, name, ns)
        succeeded = cond.get("type") == kind.succeeded
        if self.policy.cleanup == "always" or (succeeded and self.policy.cleanup == "on_success"):
            self._delete(kind, name, ns)
        if not succeeded:
            raise _failed(kind, name, ns, cond, logs, "failed", kept=self.policy.cleanup != "always")
        conditions = (final.get("status") or {}).get("conditions") or []
        return JobOutcome(
            name, ns, cond.get("reason", ""), cond.get("message", ""), logs, adopted, self.clock() - start, conditions
        )

    # -- steps -----------------------------------------------------------------------------------

    def serves(self, kind: JobKind) -> bool:
        """Whether the cluster's API discovery lists `kind` (its CRD is installed)."""
        try:
            return kind.plural in served_resources(self.custom, kind.group, kind.version, self.policy.request_timeout_s)
        except ApiException as e:
            raise _api_error(e, f"read the API discovery of {kind.group}/{kind.version}") from e
        except HTTPError as e:  # connection refused, reset, timed out
            raise KubernetesAPIError(f"could not read the API discovery of {kind.group}/{kind.version}: {e}") from e

    def _require_served(self, kind: JobKind, job: str) -> None:
        """Raise KindNotServedError (naming the CRD, its install and the launchers this cluster serves) unless
        the cluster serves `kind`."""
        if self.serves(kind):
            return
        others = [k.launcher for k in KINDS.values() if k is not kind and self.serves(k)]
        served = "".join(f"launcher={other} (served here) or " for other in others)
        raise KindNotServedError(
            f"{kind.kind} {job} was not created: this cluster does not serve {kind.crd} {kind.version} (API "
            f"discovery, GET /apis/{kind.group}/{kind.version}, does not list {kind.plural}): its CRD is not "
            f"installed. Fix: {kind.install}; or use {served}launcher=local (training in the step's own pod)"
        )

    def _create(self, kind: JobKind, job: dict[str, Any], deadline: float) -> bool:
        """Create the job; on 409 apply the on-exists policy. Returns True when an existing job was adopted."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        created, job = self._post(kind, job)
        if created:
            return False
        existing = self._get(kind, name, ns)
        if existing is None and self._post(kind, job)[0]:  # deleted in between
            return False
        existing = existing or {}
        wanted = job["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION)
        found = (existing.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        state = (terminal_condition(existing, kind) or {}).get("type", _latest_condition(existing))
        policy, plural = self.policy.on_exists, kind.kind.lower()
        if policy == "fail":
            raise JobConflictError(
                f"{kind.kind} {ns}/{name} already exists ({state}). Delete it "
                f"(kubectl -n {ns} delete {plural} {name}), pick another name, or use on_exists=adopt/replace"
            )
        if policy == "adopt":
            if not wanted or wanted != found:
                raise JobConflictError(
                    f"{kind.kind} {ns}/{name} already exists with a different spec (spec hash {found}, this "
                    f"run's {wanted}). Pick another name, or use on_exists=replace to delete it and start over"
                )
            if state == "Failed":
                cond = terminal_condition(existing, kind) or {}
                logs = self._surface_logs(kind, name, ns)
                raise _failed(kind, name, ns, cond, logs, f"failed before this attempt; {RETRY_STOPS}")
            log.info("%s %s/%s already exists with the same spec (%s): adopting it", kind.kind, ns, name, state)
            self._claim(kind, job, existing)
            return True
        log.info("%s %s/%s exists (%s): deleting it and creating it anew", kind.kind, ns, name, state)
        self._delete(kind, name, ns)
        while self._get(kind, name, ns) is not None:
            if self.clock() >= deadline:
                raise JobTimeoutError(f"{kind.kind} {ns}/{name}: the old job was not deleted before the deadline")
            self.sleep(min(self.policy.poll_s, 1.0))
        if not self._post(kind, job)[0]:
            raise JobConflictError(f"{kind.kind} {ns}/{name} was created again by someone else while replacing it")
        return False

    def _claim(self, kind: JobKind, job: dict[str, Any], existing: dict[str, Any]) -> None:
        """Make an adopted job's owner this run's (its pod), so that the earlier owner's deletion spares it."""
        wanted = job["metadata"].get("ownerReferences")
        if not wanted or wanted == existing.get("metadata", {}).get("ownerReferences"):
            return
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        try:
            self._call(
                self.custom.patch_namespaced_custom_object,
                kind.group,
                kind.version,
                ns,
                kind.plural,
                name,
                {"metadata": {"ownerReferences": wanted}},
            )
        except ApiException as e:
            raise _api_error(e, f"take over {kind.kind} {ns}/{name}", kind) from e
        log.info("%s %s/%s is now owned by pod %s", kind.kind, ns, name, wanted[0].get("name"))

    def _post(self, kind: JobKind, job: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Create `job` with strict field validation. Returns (created, the form of `job` the API server takes);
        created is False when one of that name exists (HTTP 409). A TrainJob refused because the cluster's
        Trainer does not know `spec.runtimePatches` (Trainer v2.1) is sent once more in v2.1's form
        (`spec.podTemplateOverrides`). Any other field the API server does not know is a KubernetesAPIError
        naming it."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        error = self._send(kind, job)
        refused = strict_errors(error)
        if kind is TRAINJOB and f'unknown field "spec.{trainjob.RUNTIME_PATCHES}"' in refused:
            try:
                job = trainjob.in_form(job, trainjob.POD_TEMPLATE_OVERRIDES)
            except ValueError as e:
                raise KubernetesAPIError(
                    f"could not create TrainJob {ns}/{name}: this cluster's Trainer does not know "
                    f"spec.{trainjob.RUNTIME_PATCHES} (Trainer v2.1), and {e}"
                ) from e
            log.info(
                "TrainJob %s/%s: this cluster's Trainer does not know spec.%s (Trainer v2.1): sending it as spec.%s",
                ns, name, trainjob.RUNTIME_PATCHES, trainjob.POD_TEMPLATE_OVERRIDES,
            )  # fmt: skip
            error = self._send(kind, job)
            refused = strict_errors(error)
        form = f" (spec.{trainjob.form_of(job)})" if kind is TRAINJOB else ""
        if error is None:
            log.info("created %s %s/%s%s", kind.kind, ns, name, form)
            return True, job
        if error.status == 409:
            return False, job
        if refused:
            raise KubernetesAPIError(
                f"could not create {kind.kind} {ns}/{name}: the API server refused {', '.join(refused)} (HTTP "
                f"{error.status}, strict field validation against the {kind.crd} {kind.version} CRD this cluster "
                "serves). Fix or remove that field, or install the operator version that defines it"
            ) from error
        raise _api_error(error, f"create {kind.kind} {ns}/{name}", kind) from error

    def _send(self, kind: JobKind, job: dict[str, Any]) -> ApiException | None:
        """POST `job` with `fieldValidation=Strict`: None when created, else the API server's refusal."""
        try:
            self._call(
                self.custom.create_namespaced_custom_object,
                kind.group,
                kind.version,
                job["metadata"]["namespace"],
                kind.plural,
                job,
                field_validation=STRICT,
            )
        except ApiException as e:
            return e
        return None

    def _wait(self, kind: JobKind, name: str, ns: str, deadline: float) -> dict[str, Any]:
        """Poll the job until it succeeds or fails; JobTimeoutError past `deadline`; JobFailedError (the job
        deleted) when its pods restart `max_restarts` times."""
        shown = None
        restarts = _Restarts()
        while True:
            try:
                job = self._get(kind, name, ns)
            except KubernetesAPIError as e:  # a flaky API server must not fail a long run: retry to the deadline
                log.warning("reading %s %s/%s failed (%s); retrying", kind.kind, ns, name, e)
                job = {}
            if job is None:
                raise JobVanishedError(
                    f"{kind.kind} {ns}/{name} disappeared while running (deleted by someone else?)", reason="Deleted"
                )
            if job:
                state = _latest_condition(job)
                if state != shown:
                    log.info("%s %s/%s: %s", kind.kind, ns, name, state)
                    shown = state
                if terminal_condition(job, kind) is not None:
                    return job
                self._check_restarts(kind, name, ns, restarts)
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise JobTimeoutError(
                    f"{kind.kind} {ns}/{name} did not finish within {self.policy.timeout_s:g} s (last state: {shown}); "
                    + ("it was deleted" if self.policy.cleanup != "never" else "it was left running")
                )
            self.sleep(min(self.policy.poll_s, remaining))

    def _check_restarts(self, kind: JobKind, name: str, ns: str, restarts: _Restarts) -> None:
        """Count the job's pod restarts; at `max_restarts` delete the job and raise JobFailedError."""
        limit = self.policy.max_restarts
        if limit is None:
            return
        try:
            pods = self._call(self.core.list_namespaced_pod, ns, label_selector=kind.pods(name)).items
        except (ApiException, HTTPError) as e:  # like a status read: a flaky API server is not a failure
            log.warning("listing the pods of %s %s/%s failed (%s); retrying", kind.kind, ns, name, e)
            return
        before = restarts.total
        restarts.update(pods, kind.container)
        if restarts.total != before:
            log.warning("%s %s/%s: %d restart(s) so far; last: %s", kind.kind, ns, name, restarts.total, restarts.last)
        if restarts.total < limit:
            return
        self._surface_logs(kind, name, ns)
        self._delete(kind, name, ns)
        hint = (
            " The container ran out of memory: give the pods more (the train step's `memory` / pipeline parameter "
            "`node_memory`) or lower train.batch_size."
            if "OOMKilled" in restarts.last or "exit 137" in restarts.last
            else " Read the pod's log and events (kubectl describe pod) for the cause."
        )
        raise JobFailedError(
            f"{kind.kind} {ns}/{name}: its pods restarted {restarts.total} times (limit {limit}), so it was "
            f"deleted. Last termination: {restarts.last or 'unknown'}.{hint}",
            reason="TooManyRestarts",
        )

    def _surface_logs(self, kind: JobKind, name: str, ns: str) -> str:
        """Fetch rank 0's pod log (the tail), pass each line to the log sink, and return it."""
        selector = kind.rank0(name)
        try:
            pods = self._call(self.core.list_namespaced_pod, ns, label_selector=selector).items
            if not pods:
                log.warning("no rank-0 pod of %s %s/%s found (selector %s)", kind.kind, ns, name, selector)
                return ""
            kwargs: dict[str, Any] = {"container": kind.container}
            if self.policy.log_tail_lines is not None:
                kwargs["tail_lines"] = self.policy.log_tail_lines
            text = self._call(self.core.read_namespaced_pod_log, pods[0].metadata.name, ns, **kwargs)
        except ApiException as e:  # logs are a courtesy: never let them hide the job's outcome
            log.warning("could not read rank 0's log of %s %s/%s: %s", kind.kind, ns, name, _api_error(e, "read log"))
            return ""
        for line in text.splitlines():
            self.log_sink(line)
        return text

    def _get(self, kind: JobKind, name: str, ns: str) -> dict[str, Any] | None:
        try:
            return self._call(self.custom.get_namespaced_custom_object, kind.group, kind.version, ns, kind.plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"read {kind.kind} {ns}/{name}", kind) from e
        except HTTPError as e:  # connection refused, reset, timed out
            raise KubernetesAPIError(f"could not read {kind.kind} {ns}/{name}: {e}") from e

    def _delete(self, kind: JobKind, name: str, ns: str) -> None:
        try:
            self._call(
                self.custom.delete_namespaced_custom_object,
                kind.group,
                kind.version,
                ns,
                kind.plural,
                name,
                body=k8s.V1DeleteOptions(propagation_policy="Background"),
            )
            log.info("deleted %s %s/%s", kind.kind, ns, name)
        except ApiException as e:
            if e.status != 404:
                raise _api_error(e, f"delete {kind.kind} {ns}/{name}", kind) from e

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, _request_timeout=self.policy.request_timeout_s, **kwargs)


def _failed(
    kind: JobKind, name: str, ns: str, cond: dict[str, Any], logs: str, what: str, kept: bool = True
) -> JobFailedError:
    """The JobFailedError of a job whose Failed condition is `cond`: its reason and message, rank 0's last
    lines, and how to inspect it when it is `kept`."""
    reason, message = cond.get("reason", "") or "Failed", cond.get("message", "")
    tail = "\n".join(logs.splitlines()[-20:])
    return JobFailedError(
        f"{kind.kind} {ns}/{name} {what}: {reason}: {message}"
        + (f"\nLast lines of rank 0's log:\n{tail}" if tail else "")
        + (f"\nInspect it with: kubectl -n {ns} describe {kind.kind.lower()} {name}" if kept else ""),
        reason=reason,
        logs=logs,
    )


def _api_error(e: ApiException, what: str, kind: JobKind | None = None) -> KubernetesAPIError:
    hint = {
        401: "the credentials were rejected",
        403: "the service account lacks RBAC rights in that namespace (see k8s/profile or k8s/standalone)",
        404: f"not found: is the {kind.kind} CRD installed?" if kind else "not found",
        422: "the API server rejected the object as invalid",
    }.get(e.status or 0, "")
    return KubernetesAPIError(f"could not {what}: HTTP {e.status} {e.reason}. {hint} {api_message(e)}".strip())


def strict_errors(e: ApiException | None) -> list[str]:
    """What a strict field validation refusal (HTTP 400) names, e.g. `unknown field "spec.runtimePatches"`;
    [] for any other answer."""
    found = _STRICT_ERROR.search(api_message(e, limit=None)) if e is not None and e.status == 400 else None
    return [m.group(1) for m in _FIELD_ERROR.finditer(found.group(1))] if found else []
