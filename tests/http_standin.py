"""The HTTP side of the API stand-ins (fake Kubernetes, fake KFP): JSON in, JSON or text out."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

# handle(method, path, query, body) -> (status code, payload): a str is sent as text, anything else as JSON.
Handle = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]


def json_handler(handle: Handle) -> type[BaseHTTPRequestHandler]:
    """A request handler class that decodes each request's JSON body and answers with `handle`'s result."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            code, payload = handle(method, url.path, urllib.parse.parse_qs(url.query), body)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
