"""Create a PyTorchJob, wait for it to succeed or fail within a deadline, surface the master's logs, clean up.

Policies, chosen for a pipeline step that may be retried:
- An existing job of the same name (HTTP 409) is handled per `on_exists`:
  `adopt` (default) takes over a job created from the same spec (same `asymvae/spec-hash` annotation) that is
  running or has succeeded, so a retried step neither duplicates nor loses a run; a failed one is replaced,
  and a job with a different spec is a conflict (JobConflictError). `replace` deletes whatever exists and
  creates anew. `fail` raises JobConflictError.
- The job is deleted after it ends per `cleanup`: `on_success` (default: a failed job stays for
  `kubectl describe`; the operator's ttlSecondsAfterFinished removes it later), `always`, `never`.
  A job past the deadline is deleted (it would hold its GPUs) unless cleanup is `never`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from asymvae.cluster.errors import JobConflictError, JobFailedError, JobTimeoutError, KubernetesAPIError
from asymvae.cluster.pytorchjob import (
    CONTAINER_NAME,
    GROUP,
    JOB_NAME_LABEL,
    PLURAL,
    REPLICA_TYPE_LABEL,
    SPEC_HASH_ANNOTATION,
    VERSION,
)

log = logging.getLogger(__name__)

ON_EXISTS = ("adopt", "replace", "fail")
CLEANUP = ("on_success", "always", "never")
TERMINAL = ("Succeeded", "Failed")


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
    log_tail_lines: int | None = 200
    """Lines of the master's log to surface at the end (None: all of it)."""
    request_timeout_s: float = 30.0
    """Timeout of each API request."""

    def __post_init__(self) -> None:
        if self.on_exists not in ON_EXISTS:
            raise ValueError(f"on_exists must be one of {ON_EXISTS}, got {self.on_exists!r}")
        if self.cleanup not in CLEANUP:
            raise ValueError(f"cleanup must be one of {CLEANUP}, got {self.cleanup!r}")
        if self.timeout_s <= 0 or self.poll_s <= 0:
            raise ValueError("timeout_s and poll_s must be > 0")


@dataclass
class JobOutcome:
    """A finished (Succeeded) job."""

    name: str
    namespace: str
    reason: str
    """The Succeeded condition's reason."""
    message: str
    logs: str
    """The master's last log lines."""
    adopted: bool
    """True when an existing job was taken over instead of created."""
    seconds: float
    conditions: list[dict[str, Any]] = field(default_factory=list)


def load_api_client() -> k8s.ApiClient:
    """An API client from the pod's service account, else from ~/.kube/config (or $KUBECONFIG)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return k8s.ApiClient()


def terminal_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    """The job's Succeeded or Failed condition when it holds (status "True"), else None."""
    for cond in reversed((job.get("status") or {}).get("conditions") or []):
        if cond.get("type") in TERMINAL and str(cond.get("status")) == "True":
            return cond
    return None


def _latest_condition(job: dict[str, Any]) -> str:
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    return conds[-1].get("type", "?") if conds else "Pending"


class PyTorchJobRunner:
    """Runs one PyTorchJob manifest to completion against a Kubernetes API server."""

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
        self.log_sink = log_sink or (lambda line: log.info("[master] %s", line))
        self.clock, self.sleep = clock, sleep

    # -- the whole run ---------------------------------------------------------------------------

    def run(self, job: dict[str, Any]) -> JobOutcome:
        """Create `job`, wait for Succeeded/Failed, surface the master's logs, clean up; raise unless Succeeded."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        start = self.clock()
        deadline = start + self.policy.timeout_s
        adopted = self._create(job, deadline)
        try:
            final = self._wait(name, ns, deadline)
        except JobTimeoutError:
            self._surface_logs(name, ns)
            if self.policy.cleanup != "never":
                self._delete(name, ns)
            raise
        cond = terminal_condition(final) or {}
        logs = self._surface_logs(name, ns)
        succeeded = cond.get("type") == "Succeeded"
        if self.policy.cleanup == "always" or (succeeded and self.policy.cleanup == "on_success"):
            self._delete(name, ns)
        if not succeeded:
            reason, message = cond.get("reason", "") or "Failed", cond.get("message", "")
            tail = "\n".join(logs.splitlines()[-20:])
            raise JobFailedError(
                f"PyTorchJob {ns}/{name} failed: {reason}: {message}"
                + (f"\nLast lines of the master's log:\n{tail}" if tail else "")
                + (
                    f"\nInspect it with: kubectl -n {ns} describe pytorchjob {name}"
                    if self.policy.cleanup != "always"
                    else ""
                ),
                reason=reason,
                logs=logs,
            )
        conditions = (final.get("status") or {}).get("conditions") or []
        return JobOutcome(
            name, ns, cond.get("reason", ""), cond.get("message", ""), logs, adopted, self.clock() - start, conditions
        )

    # -- steps -----------------------------------------------------------------------------------

    def _create(self, job: dict[str, Any], deadline: float) -> bool:
        """Create the job; on 409 apply the on-exists policy. Returns True when an existing job was adopted."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        if self._post(job):
            return False
        existing = self._get(name, ns)
        if existing is None and self._post(job):  # deleted in between
            return False
        existing = existing or {}
        wanted = job["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION)
        found = (existing.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        state = (terminal_condition(existing) or {}).get("type", _latest_condition(existing))
        policy = self.policy.on_exists
        if policy == "fail":
            raise JobConflictError(
                f"PyTorchJob {ns}/{name} already exists ({state}). Delete it "
                f"(kubectl -n {ns} delete pytorchjob {name}), pick another name, or use on_exists=adopt/replace"
            )
        if policy == "adopt":
            if not wanted or wanted != found:
                raise JobConflictError(
                    f"PyTorchJob {ns}/{name} already exists with a different spec (spec hash {found}, this "
                    f"run's {wanted}). Pick another name, or use on_exists=replace to delete it and start over"
                )
            if state != "Failed":
                log.info("PyTorchJob %s/%s already exists with the same spec (%s): adopting it", ns, name, state)
                return True
        log.info("PyTorchJob %s/%s exists (%s): deleting it and creating it anew", ns, name, state)
        self._delete(name, ns)
        while self._get(name, ns) is not None:
            if self.clock() >= deadline:
                raise JobTimeoutError(f"PyTorchJob {ns}/{name}: the old job was not deleted before the deadline")
            self.sleep(min(self.policy.poll_s, 1.0))
        if not self._post(job):
            raise JobConflictError(f"PyTorchJob {ns}/{name} was created again by someone else while replacing it")
        return False

    def _post(self, job: dict[str, Any]) -> bool:
        """Create `job`: True when created, False when one of that name exists (HTTP 409)."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        try:
            self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, job)
        except ApiException as e:
            if e.status == 409:
                return False
            raise _api_error(e, f"create PyTorchJob {ns}/{name}") from e
        log.info("created PyTorchJob %s/%s", ns, name)
        return True

    def _wait(self, name: str, ns: str, deadline: float) -> dict[str, Any]:
        """Poll the job until it is Succeeded or Failed; JobTimeoutError past `deadline`."""
        shown = None
        while True:
            try:
                job = self._get(name, ns)
            except KubernetesAPIError as e:  # a flaky API server must not fail a long run: retry to the deadline
                log.warning("reading PyTorchJob %s/%s failed (%s); retrying", ns, name, e)
                job = {}
            if job is None:
                raise JobFailedError(
                    f"PyTorchJob {ns}/{name} disappeared while running (deleted by someone else?)", reason="Deleted"
                )
            if job:
                state = _latest_condition(job)
                if state != shown:
                    log.info("PyTorchJob %s/%s: %s", ns, name, state)
                    shown = state
                if terminal_condition(job) is not None:
                    return job
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise JobTimeoutError(
                    f"PyTorchJob {ns}/{name} did not finish within {self.policy.timeout_s:g} s (last state: {shown}); "
                    + ("it was deleted" if self.policy.cleanup != "never" else "it was left running")
                )
            self.sleep(min(self.policy.poll_s, remaining))

    def _surface_logs(self, name: str, ns: str) -> str:
        """Fetch the master pod's log (the tail), pass each line to the log sink, and return it."""
        selector = f"{JOB_NAME_LABEL}={name},{REPLICA_TYPE_LABEL}=master"
        try:
            pods = self._call(self.core.list_namespaced_pod, ns, label_selector=selector).items
            if not pods:
                log.warning("no master pod of PyTorchJob %s/%s found (selector %s)", ns, name, selector)
                return ""
            kwargs = {"container": CONTAINER_NAME}
            if self.policy.log_tail_lines is not None:
                kwargs["tail_lines"] = self.policy.log_tail_lines
            text = self._call(self.core.read_namespaced_pod_log, pods[0].metadata.name, ns, **kwargs)
        except ApiException as e:  # logs are a courtesy: never let them hide the job's outcome
            log.warning("could not read the master's log of PyTorchJob %s/%s: %s", ns, name, _api_error(e, "read log"))
            return ""
        for line in text.splitlines():
            self.log_sink(line)
        return text

    def _get(self, name: str, ns: str) -> dict[str, Any] | None:
        try:
            return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"read PyTorchJob {ns}/{name}") from e
        except HTTPError as e:  # connection refused, reset, timed out
            raise KubernetesAPIError(f"could not read PyTorchJob {ns}/{name}: {e}") from e

    def _delete(self, name: str, ns: str) -> None:
        try:
            self._call(
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                PLURAL,
                name,
                body=k8s.V1DeleteOptions(propagation_policy="Background"),
            )
            log.info("deleted PyTorchJob %s/%s", ns, name)
        except ApiException as e:
            if e.status != 404:
                raise _api_error(e, f"delete PyTorchJob {ns}/{name}") from e

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, _request_timeout=self.policy.request_timeout_s, **kwargs)


def _api_error(e: ApiException, what: str) -> KubernetesAPIError:
    hint = {
        401: "the credentials were rejected",
        403: "the service account lacks RBAC rights (see k8s/base/rbac.yaml)",
        404: "not found: is the Kubeflow training operator (the PyTorchJob CRD) installed?",
        422: "the API server rejected the object as invalid",
    }.get(e.status or 0, "")
    detail = (e.body or "").strip()[:500] if isinstance(e.body, str) else ""
    return KubernetesAPIError(f"could not {what}: HTTP {e.status} {e.reason}. {hint} {detail}".strip())
