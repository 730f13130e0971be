"""Request ids and the access log, for every HTTP request.

Each request gets an id: the caller's ``X-Request-ID`` when it is usable (1 to 128 printable ASCII
characters), else a new one. The id goes back as the ``x-request-id`` response header, into
:data:`REQUEST_ID` while the request is handled (so log records and data capture carry it) and into the
access log line when that is on.

New ids cost a counter step, not a random draw (``uuid4()`` reads the OS's random source each time: ten times
the cost): a 128-bit counter that starts at a random value chosen once per process, in hex, so they look like
``uuid4().hex`` (32 hex digits) and stay unique across processes and restarts.

The HTTP server (:mod:`inferd.server.http.protocol`) calls :meth:`RequestObserver.request_id` and
:meth:`RequestObserver.log_access` for every request, whichever route answers it; the gRPC servicer calls
:meth:`RequestObserver.from_grpc_metadata`.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from time import perf_counter_ns

REQUEST_ID: ContextVar[str | None] = ContextVar("inferd_request_id", default=None)
"""The id of the request being handled, where there is one."""

HEADER = b"x-request-id"
GRPC_KEY = HEADER.decode()
MAX_LENGTH = 128
_USABLE = re.compile(rb"[\x20-\x7e]{1,%d}" % MAX_LENGTH)

ACCESS_LOGGER = "inferd.access"


class RequestObserver:
    """Gives requests their ids and, when ``access_log`` is on, logs one line per request."""

    def __init__(self, access_log: bool = False, logger: logging.Logger | None = None) -> None:
        self.access_log = access_log
        self._log = logger or logging.getLogger(ACCESS_LOGGER)
        start = (1 << 127) | (uuid.uuid4().int >> 2)  # top bit set: always 32 hex digits
        self._next = itertools.count(start).__next__  # atomic under the GIL: safe from any thread

    def request_id(self, given: bytes | None = None) -> str:
        """``given`` (an ``X-Request-ID`` value) when usable, else a new id."""
        if given is not None and _USABLE.fullmatch(given) is not None:
            return given.decode("ascii")
        return hex(self._next())[2:]

    def from_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The id for a request with these (lower-case) headers."""
        for name, value in headers:
            if name == HEADER:
                return self.request_id(value)
        return self.request_id()

    def from_grpc_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The id for a gRPC call with this invocation metadata (``x-request-id``, as over HTTP)."""
        for key, value in metadata or ():
            if key == GRPC_KEY and isinstance(value, str):
                return self.request_id(value.encode())
        return self.request_id()

    def log_access(self, method: str, path: str, status: int, started_ns: int, request_id: str,
                   bytes_in: int, bytes_out: int) -> None:
        duration_ms = round((perf_counter_ns() - started_ns) / 1e6, 3)
        self._log.info("%s %s %d %.3f ms", method, path, status, duration_ms, extra={
            "request_id": request_id, "method": method, "path": path, "status": status,
            "duration_ms": duration_ms, "bytes_in": bytes_in, "bytes_out": bytes_out,
        })
