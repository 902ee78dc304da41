"""A total deadline for HTTP requests made through urllib3 (the object store's client).

urllib3's timeouts bound each connect and each socket read, so a server that sends a byte just before every
read timeout holds its caller for ever. A `Deadline` bounds a whole exchange: at the deadline a watchdog shuts
the sockets of the connections it guards, the blocked call fails at once, and leaving the `with` block raises
`DeadlineExceeded`. `within(seconds)` guards every request the calling thread makes inside it through a pool
manager from `guarded_pool_manager`; `Deadline.guard` guards one connection (a response being streamed).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

_current = threading.local()


class DeadlineExceeded(TimeoutError):
    """An exchange did not finish within its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")
        self.seconds = seconds


def _shut(conn: Any) -> None:
    # http.client hands the socket to the response and forgets it when the server will close the connection
    # after the answer: the socket the answer is read from is the one kept at `getresponse`.
    for sock in (getattr(conn, "sock", None), getattr(conn, "answer_sock", None)):
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Deadline:
    """`seconds` from entering the `with` block: then every guarded connection is shut."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def guard(self, conn: Any) -> None:
        """Shut `conn`'s socket at the deadline (at once when it has passed)."""
        with self._lock:
            self._conns.append(conn)
            if self.expired.is_set():
                _shut(conn)

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            for conn in self._conns:
                _shut(conn)

    def __enter__(self) -> Deadline:
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        assert self._timer is not None
        self._timer.cancel()
        if isinstance(error, Exception) and self.expired.is_set():  # whatever the cut socket raised
            raise DeadlineExceeded(self.seconds) from error


@contextlib.contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Bound every request this thread makes inside the block (through `guarded_pool_manager`) by `seconds`
    in all."""
    outer = getattr(_current, "deadline", None)
    with Deadline(seconds) as deadline:
        _current.deadline = deadline
        try:
            yield deadline
        finally:
            _current.deadline = outer


class _Guarded:
    """A urllib3 connection that puts itself under the thread's current deadline for each request, and keeps
    the socket its answer is read from (`answer_sock`)."""

    answer_sock: socket.socket | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.guard(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        self.answer_sock = self.sock  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPConnection(_Guarded, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def guarded_pool_manager(**kwargs: Any) -> urllib3.PoolManager:
    """A `urllib3.PoolManager(**kwargs)` whose requests `within` can bound."""
    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
    return manager
