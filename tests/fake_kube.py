"""A stand-in Kubernetes API server (no cluster can run here) for the few endpoints the PyTorchJob runner calls.

It speaks the REST paths the real `kubernetes` client uses, so tests drive the real client against it:
POST/GET/DELETE /apis/kubeflow.org/v1/namespaces/NS/pytorchjobs[/NAME], GET /api/v1/namespaces/NS/pods
(label selector), GET /api/v1/namespaces/NS/pods/POD/log. Every request is recorded, every created job is
validated against the real PyTorchJob CRD (closed objects; an invalid one gets HTTP 422 as from the API
server), and each GET of a job returns the next status of a scripted sequence (the last one repeats).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from asymvae.cluster.crd import schema_errors
from tests.http_standin import json_handler

JOBS = "/apis/kubeflow.org/v1/namespaces/"


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    """A PyTorchJob status condition that holds."""
    return {"type": kind, "status": "True", "reason": reason or f"PyTorchJob{kind}", "message": message}


def status(*kinds: str, reason: str = "", message: str = "") -> dict[str, Any]:
    """A status whose conditions are `kinds` in order; the last one gets `reason`/`message`."""
    conds = [condition(k) for k in kinds]
    if conds and (reason or message):
        conds[-1] = condition(kinds[-1], reason, message)
    return {"conditions": conds}


@dataclass
class Request:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeJob:
    obj: dict[str, Any]
    statuses: list[dict[str, Any]]
    log: str = ""
    reads: int = 0


@dataclass
class FakeKube:
    """The server's state: jobs, their scripted statuses and logs, and the requests seen."""

    crd_path: Path
    scripts: dict[str, tuple[list[dict[str, Any]], str]] = field(default_factory=dict)
    jobs: dict[tuple[str, str], FakeJob] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    invalid_bodies: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def script(self, name: str, statuses: list[dict[str, Any]], log: str = "") -> None:
        """What a job named `name` reports once created: successive statuses, and the master's log."""
        self.scripts[name] = (statuses, log)

    def add_existing(self, obj: dict[str, Any], statuses: list[dict[str, Any]], log: str = "") -> None:
        """A job that exists before the test's runner starts."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.jobs[key] = FakeJob(json.loads(json.dumps(obj)), statuses, log)

    def calls(self, method: str, path_part: str = "") -> list[Request]:
        """Requests with this method whose path contains `path_part`."""
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- request handling ------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(Request(method, path, query, body))
            if path.startswith(JOBS) and "/pytorchjobs" in path:
                return self._jobs(method, path, body)
            if path.startswith("/api/v1/namespaces/") and "/pods" in path:
                return self._pods(path, query)
            return 404, _status(404, "NotFound", f"no route {method} {path}")

    def _jobs(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path[len(JOBS) :].split("/")  # NS, pytorchjobs[, NAME]
        ns, name = parts[0], parts[2] if len(parts) > 2 else None
        if method == "POST" and name is None:
            errors = schema_errors(body, self.crd_path)
            if errors:
                self.invalid_bodies.append(errors)
                return 422, _status(422, "Invalid", "; ".join(errors))
            key = (ns, body["metadata"]["name"])
            if key in self.jobs:
                return 409, _status(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{key[1]}" already exists')
            statuses, log = self.scripts.get(key[1], ([{}], ""))
            self.jobs[key] = FakeJob(body, statuses, log)
            return 201, body
        job = self.jobs.get((ns, name or ""))
        if job is None:
            return 404, _status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        if method == "GET":
            current = job.statuses[min(job.reads, len(job.statuses) - 1)]
            job.reads += 1
            return 200, {**job.obj, "status": current}
        if method == "DELETE":
            del self.jobs[(ns, name)]
            return 200, _status(200, "Success", "")
        return 405, _status(405, "MethodNotAllowed", method)

    def _pods(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = path.split("/")  # '', api, v1, namespaces, NS, pods[, POD, log]
        ns = parts[4]
        pods = {f"{name}-master-0": (job, name) for (job_ns, name), job in self.jobs.items() if job_ns == ns}
        if len(parts) == 6:
            wanted = dict(item.split("=", 1) for item in query.get("labelSelector", [""])[0].split(",") if item)
            items = []
            for pod_name, (_, job_name) in pods.items():
                labels = {"training.kubeflow.org/job-name": job_name, "training.kubeflow.org/replica-type": "master"}
                if all(labels.get(k) == v for k, v in wanted.items()):
                    items.append(
                        {
                            "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
                            "spec": {"containers": [{"name": "pytorch", "image": "asymvae"}]},
                        }
                    )
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        if len(parts) == 8 and parts[7] == "log" and parts[6] in pods:
            text = pods[parts[6]][0].log
            tail = query.get("tailLines")
            if tail:
                text = "\n".join(text.splitlines()[-int(tail[0]) :])
            return 200, text
        return 404, _status(404, "NotFound", f"pod {parts[6] if len(parts) > 6 else ''} not found")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class FakeKubeServer:
    """Runs a FakeKube on 127.0.0.1 in a thread; `api_client()` is a real kubernetes client pointed at it."""

    def __init__(self, crd_path: Path) -> None:
        self.state = FakeKube(crd_path)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(self.state.handle))
        self.state.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def api_client(self) -> Any:
        """The real kubernetes ApiClient, configured for this server."""
        from kubernetes import client

        cfg = client.Configuration(host=self.state.url)
        return client.ApiClient(cfg)
