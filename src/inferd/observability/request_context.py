"""Request ids and the access log, for every HTTP request.

Each request gets an id: the caller's ``X-Request-ID`` when it is usable (1 to 128 printable ASCII
characters), else a new one. The id goes back as the ``x-request-id`` response header, into
:data:`REQUEST_ID` while the request is handled (so log records and data capture carry it) and into the
access log line when that is on.

New ids cost a counter step, not a random draw (``uuid4()`` reads the OS's random source each time: ten times
the cost): a 128-bit counter that starts at a random value chosen once per process, in hex, so they look like
``uuid4().hex`` (32 hex digits) and stay unique across processes and restarts.

The HTTP fast path (:mod:`inferd.server.rest.fast_protocol`) calls :meth:`RequestObserver.request_id` and
:meth:`RequestObserver.log_access` itself; everything served through ASGI goes through
:meth:`RequestObserver.wrap`, one pure-ASGI wrapper.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("inferd_request_id", default=None)
"""The id of the request being handled, where there is one."""

HEADER = b"x-request-id"
GRPC_KEY = HEADER.decode()
MAX_LENGTH = 128
_USABLE = re.compile(rb"[\x20-\x7e]{1,%d}" % MAX_LENGTH)

ACCESS_LOGGER = "inferd.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with request ids (and the access log) on its HTTP requests."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            await self._observe(app, scope, receive, send)

        return observed

    async def _observe(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = self.from_headers(scope["headers"])
        header = (HEADER, request_id.encode("ascii"))
        started = perf_counter_ns() if self.access_log else 0
        status, sent = 500, 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            if self.access_log:
                self.log_access(scope["method"], scope["path"], status, started, request_id,
                                _content_length(scope["headers"]), sent)


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
