"""Stand-ins for what lies between the deploy step and the predictor on a Kubeflow cluster (none can run here):
the cluster-local gateway under Kubeflow's machine-to-machine auth overlay, and the cluster DNS that leads
an InferenceService's cluster-local address to it.

The gateway's policy, as kubeflow/manifests 26.03 writes it in common/istio/cluster-local-gateway/overlays/m2m-auth/:
- cluster-local-gateway-requestauthentication.yaml: a JWT in `Authorization: Bearer ...` is checked against
  the Kubernetes issuer's keys; Istio refuses a token that fails the check with 401 `Jwt verification fails`
  (here: a token not in `tokens`, the ones the issuer signed and that have not expired);
- cluster-local-gateway-authorizationpolicy-deny.yaml: DENY a request without a request principal (no
  valid JWT) unless its path is a health or metrics path: Envoy's RBAC filter answers 403
  `RBAC: access denied`;
- cluster-local-gateway-authorizationpolicy-patch.yaml: ALLOW a request with a principal, and those paths.
What passes goes on, token and all (`forwardOriginalToken: true`), to the predictor of the host it names:
`routes` maps a Host to the server behind it (the real v2 server); Envoy answers 404 for another host.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from typing import Any

import pytest

from tests.support.http_standin import LoopbackServer, Passed, Request, json_handler

HEALTH_PATHS = ("/healthz", "/ready", "/wait-for-drain", "/metrics", "/stats/prometheus")
"""The paths the overlay lets through without a token (and `*/healthz`, `*/ready`)."""


class M2MGateway:
    """`with M2MGateway(routes, tokens) as port:` the gateway on a free loopback port; `seen` holds the
    `Authorization` header of each request (None: none)."""

    def __init__(self, routes: dict[str, str], tokens: set[str]) -> None:
        self.routes, self.tokens = routes, tokens
        self.seen: list[str | None] = []
        self.server = LoopbackServer(json_handler(self.handle))
        self.port = self.server.port

    def __enter__(self) -> int:
        self.server.start()
        return self.port

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    def handle(self, req: Request) -> tuple[int, Any]:
        self.seen.append(req.headers.get("authorization"))
        exempt = req.path in HEALTH_PATHS or req.path.endswith(("/healthz", "/ready"))
        if req.bearer_token is not None and req.bearer_token not in self.tokens:
            return 401, "Jwt verification fails"
        if req.bearer_token is None and not exempt:
            return 403, "RBAC: access denied"
        host = req.headers.get("host", "").rsplit(":", 1)[0]
        if host not in self.routes:
            return 404, ""
        return _forward(self.routes[host], req)


def _forward(upstream: str, req: Request) -> tuple[int, Passed]:
    """Send `req` on to `upstream` (a base URL) and hand back its answer, bytes and headers as they are (Envoy
    passes on every end-to-end header, e.g. the v2 binary extension's `Inference-Header-Content-Length`)."""
    parts = urllib.parse.urlsplit(upstream)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {k: v for k, v in req.headers.items() if k not in ("host", "content-length", "connection")}
    try:
        conn.request(req.method, req.path, body=req.raw or None, headers=headers)
        answer = conn.getresponse()
        return answer.status, Passed(answer.read(), dict(answer.getheaders()))
    finally:
        conn.close()


def cluster_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names in the cluster's domain (`*.svc`, `*.svc.cluster.local`) resolve to 127.0.0.1, where the test's
    gateway listens: as CoreDNS resolves KServe's address (an ExternalName Service for the local gateway)."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith((".svc", ".svc.cluster.local")):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
