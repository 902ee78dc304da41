"""A stand-in for the Kubeflow Pipelines REST API (no KFP server can run here).

It answers the v2beta1 paths kfp.Client (kfp_server_api) calls to register a pipeline and its versions and to
start runs and recurring runs: healthz; list/create experiments; list pipelines, upload a pipeline (which, as
in KFP, also creates its first version, named like the pipeline), list and upload pipeline versions (the
package in a multipart body); create and get runs; create recurring runs. Every request is recorded.

Multi-user mode (`multi_user=True`, KFP with profiles) holds what the client relies on: every request must
carry the expected bearer token (401 otherwise), an experiment or a listing with an empty namespace is refused
(KFP answers 400 "Invalid input error"), pipelines are kept per namespace, and a run or recurring run must
name an existing experiment and pipeline version.
"""

from __future__ import annotations

import email.parser
import json
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import yaml

from tests.support.http_standin import Request, json_handler

API = "/apis/v2beta1"
TOKEN = "kfp-user-token"


def _error(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"error": message, "code": {400: 3, 401: 16, 404: 5}.get(code, 2), "message": message}


def _matches(item: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """A listing's `filter` (display_name EQUALS ...), the only predicate kfp.Client sends here."""
    raw = query.get("filter", [""])[0]
    if not raw:
        return True
    return all(item.get(p["key"]) == p.get("string_value", p.get("stringValue")) for p in json.loads(raw)["predicates"])


def _upload(req: Request) -> dict[str, Any]:
    """The pipeline spec of a multipart upload's `uploadfile` part."""
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode() + req.raw
    )
    (part,) = [p for p in message.walk() if p.get_param("name", header="content-disposition") == "uploadfile"]
    return next(yaml.safe_load_all(part.get_payload(decode=True)))


@dataclass
class KFPStandIn:
    """State: experiments, pipelines and versions, runs, recurring runs, and every request seen."""

    multi_user: bool = False
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)

    def calls(self, method: str, path: str) -> list[Request]:
        """Requests with this method whose path is `path` (after /apis/v2beta1)."""
        return [r for r in self.requests if r.method == method and r.path == API + path]

    def handle(self, req: Request) -> tuple[int, Any]:
        self.requests.append(req)
        if req.path == f"{API}/healthz":
            return 200, {"multi_user": self.multi_user}
        if self.multi_user and req.bearer_token != TOKEN:
            return _error(401, "Unauthenticated: request header error: there is no user identity header")
        path, q = req.path, req.query
        namespace = q.get("namespace", [""])[0]
        if path == f"{API}/experiments":
            if req.method == "GET":
                if self.multi_user and not namespace:
                    return _error(400, "Invalid input error: ListExperiments must specify a namespace")
                found = [e for e in self.experiments.values() if e.get("namespace", "") == namespace and _matches(e, q)]
                return 200, {"experiments": found, "total_size": len(found)} if found else {}
            if self.multi_user and not (req.body or {}).get("namespace"):
                return _error(400, "Invalid input error: an experiment needs a namespace in multi-user mode")
            exp = {**req.body, "experiment_id": f"exp-{len(self.experiments) + 1}", "storage_state": "AVAILABLE"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{API}/pipelines" and req.method == "GET":
            found = [p for p in self.pipelines.values() if p.get("namespace", "") == namespace and _matches(p, q)]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if path == f"{API}/pipelines/upload" and req.method == "POST":
            if self.multi_user and not namespace:
                return _error(400, "Invalid input error: a shared pipeline needs an administrator; pass a namespace")
            name = q["name"][0]
            pid = f"pipeline-{len(self.pipelines) + 1}"
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": name, "namespace": namespace,
                                   "description": q.get("description", [""])[0]}  # fmt: skip
            self._add_version(pid, name, _upload(req))
            return 200, self.pipelines[pid]
        if path == f"{API}/pipelines/upload_version" and req.method == "POST":
            pid = q.get("pipelineid", [""])[0]
            if pid not in self.pipelines:
                return _error(404, f"pipeline {pid!r} not found")
            made = self._add_version(pid, q["name"][0], _upload(req))
            return (200, made) if made else _error(409, f"version {q['name'][0]!r} already exists")
        if path.startswith(f"{API}/pipelines/") and path.endswith("/versions") and req.method == "GET":
            pid = path.split("/")[-2]
            found = [v for v in self.versions.values() if v["pipeline_id"] == pid and _matches(v, q)]
            found.sort(key=lambda v: v["created_at"], reverse=True)
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if req.method == "POST" and path in (f"{API}/runs", f"{API}/recurringruns"):
            problem = self._check_references(req.body)
            if problem:
                return _error(400, problem)
            if path.endswith("/runs"):
                run = {**req.body, "run_id": f"run-{len(self.runs) + 1}", "state": "PENDING"}
                self.runs[run["run_id"]] = run
                return 200, run
            rec = {**req.body, "recurring_run_id": f"rr-{len(self.recurring) + 1}", "status": "ENABLED"}
            self.recurring[rec["recurring_run_id"]] = rec
            return 200, rec
        if req.method == "GET" and path.startswith(f"{API}/runs/"):
            run = self.runs.get(path.rsplit("/", 1)[1])
            return (200, run) if run else _error(404, "run not found")
        return _error(404, f"stand-in has no {req.method} {path}")

    def _add_version(self, pid: str, name: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        if any(v["pipeline_id"] == pid and v["display_name"] == name for v in self.versions.values()):
            return None
        vid = f"version-{len(self.versions) + 1}"
        created = f"2026-12-01T00:00:{len(self.versions):02d}Z"
        self.versions[vid] = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name,
                              "created_at": created, "pipeline_spec": spec}  # fmt: skip
        return self.versions[vid]

    def _check_references(self, body: dict[str, Any]) -> str | None:
        exp = self.experiments.get(body.get("experiment_id", ""))
        if exp is None:
            return f"experiment {body.get('experiment_id')!r} not found"
        ref = body.get("pipeline_version_reference") or {}
        version = self.versions.get(ref.get("pipeline_version_id", ""))
        if body.get("pipeline_spec") is None and (version is None or version["pipeline_id"] != ref.get("pipeline_id")):
            return f"pipeline version {ref} not found"
        return None


class KFPStandInServer:
    """`with KFPStandInServer(multi_user=...) as (state, url):` a stand-in on a free loopback port."""

    def __init__(self, multi_user: bool = False) -> None:
        self.state = KFPStandIn(multi_user=multi_user)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(self.state.handle))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> tuple[KFPStandIn, str]:
        self.thread.start()
        return self.state, f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
