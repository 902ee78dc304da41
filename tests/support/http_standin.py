"""The HTTP side of the API stand-ins (fake Kubernetes, fake KFP): each request decoded into a `Request`
(JSON body parsed, other bodies kept as bytes), answered with JSON or text."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    """One request a stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The parsed JSON body; None when empty or not JSON (see `raw`)."""
    raw: bytes

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer ...` header."""
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


@dataclass
class Passed:
    """An answer sent on as it came (a proxy's): its bytes and headers."""

    body: bytes
    headers: dict[str, str]


_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "keep-alive", "date", "server")

# handle(request) -> (status code, payload): a str is sent as text, `Passed` as it is, anything else as JSON.
Handle = Callable[[Request], tuple[int, Any]]


def json_handler(handle: Handle) -> type[BaseHTTPRequestHandler]:
    """A request handler class that decodes each request and answers with `handle`'s result."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = None
            if raw and "json" in headers.get("content-type", "application/json"):
                body = json.loads(raw)
            code, payload = handle(Request(method, url.path, urllib.parse.parse_qs(url.query), headers, body, raw))
            if isinstance(payload, Passed):
                data, sent = payload.body, {k: v for k, v in payload.headers.items() if k.lower() not in _HOP_BY_HOP}
            else:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                sent = {"Content-Type": "text/plain" if isinstance(payload, str) else "application/json"}
            self.send_response(code)
            for name, value in sent.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


class LoopbackServer:
    """A threaded HTTP server on a free loopback port, answering with `handler` from `start()` to `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
