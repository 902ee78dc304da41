"""A stand-in for the Kubeflow Pipelines REST API (no KFP server can run here).

It answers the v2beta1 paths kfp.Client (kfp_server_api) calls for a run and a recurring run: healthz,
list/create experiments, create runs and recurring runs, get a run. Every request is recorded with its
parsed JSON body so tests can check what the real client sent.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                state.requests.append(Recorded(method, url.path, urllib.parse.parse_qs(url.query), body))
                code, payload = state.handle(method, url.path, body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> tuple[KFPStandIn, str]:
        self.thread.start()
        return self.state, f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
