"""One HTTP request to one host, bounded by a total deadline, never following a redirect.

`request` connects, sends, waits and reads within `timeout_s` in all: a watchdog shuts the socket at the
deadline, so a server that answers a byte at a time cannot hold the caller longer. A redirect is refused
(an `HTTPFault` naming where it pointed), never followed, so the request's headers (a token) reach no
other URL. Only the standard library.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field

from asymvae.storage.base import StorageError


class HTTPFault(StorageError):
    """The request got no usable answer: unreachable, past its deadline, or redirected; the message says which."""


@dataclass
class Answer:
    """A complete answer (any status but a redirect)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """The answer's headers, names in lower case."""


def request(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout_s: float) -> Answer:
    """Send one request to `url`'s host and read the whole answer within `timeout_s` seconds in all."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPFault(f"{url} is not an http:// or https:// URL. Fix: pass the server's base URL.")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout_s)
    expired = threading.Event()

    def expire() -> None:  # at the deadline: unblock whatever the request waits on
        expired.set()
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.start()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    failure: Exception | None = None
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as e:
        failure = e
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set() or isinstance(failure, TimeoutError):  # a read cut at the deadline may look complete
        raise HTTPFault(
            f"{method} {url}: no complete answer within {timeout_s:g} s. Fix: check the server, or allow more time."
        )
    if failure is not None:
        raise HTTPFault(f"{method} {url} failed: {failure}. Is the server up and the URL right?")
    if 300 <= response.status < 400:
        raise HTTPFault(
            f"{method} {url} answered HTTP {response.status}, a redirect to {response.getheader('Location')}, which "
            "is not followed (it would carry the request's headers there). Fix: pass the URL it redirects to."
        )
    return Answer(response.status, payload, {k.lower(): v for k, v in response.getheaders()})
