"""A stand-in for the Kubeflow Pipelines REST API (no KFP server can run here).

It answers the v2beta1 paths kfp.Client (kfp_server_api) calls for a run and a recurring run: healthz,
list/create experiments, create runs and recurring runs, get a run. Every request is recorded with its
parsed JSON body so tests can check what the real client sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.http_standin import json_handler

API = "/apis/v2beta1"


@dataclass
class Recorded:
    """One request."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class KFPStandIn:
    """State: experiments, runs, recurring runs, and every request seen."""

    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)

    def calls(self, method: str, path: str) -> list[Recorded]:
        """Requests with this method whose path is `path` (after /apis/v2beta1)."""
        return [r for r in self.requests if r.method == method and r.path == API + path]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments":
            if method == "GET":
                listed = list(self.experiments.values())
                return 200, {"experiments": listed, "total_size": len(listed)} if listed else {}
            exp = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}", "storage_state": "AVAILABLE"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if method == "POST" and path == f"{API}/runs":
            run = {**body, "run_id": f"run-{len(self.runs) + 1}", "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and path.startswith(f"{API}/runs/"):
            run = self.runs.get(path.rsplit("/", 1)[1])
            return (200, run) if run else (404, {"error": "run not found"})
        if method == "POST" and path == f"{API}/recurringruns":
            rec = {**body, "recurring_run_id": f"rr-{len(self.recurring) + 1}", "status": "ENABLED"}
            self.recurring[rec["recurring_run_id"]] = rec
            return 200, rec
        return 404, {"error": f"stand-in has no {method} {path}"}


class KFPStandInServer:
    """`with KFPStandInServer() as (state, url):` a stand-in on a free loopback port."""

    def __init__(self) -> None:
        self.state = KFPStandIn()
        state = self.state

        def handle(method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
            state.requests.append(Recorded(method, path, query, body))
            return state.handle(method, path, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(handle))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> tuple[KFPStandIn, str]:
        self.thread.start()
        return self.state, f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
