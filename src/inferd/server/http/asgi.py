"""One HTTP request handed to an ASGI app (ASGI 3, HTTP spec 2.3): the scope, ``receive`` and ``send``.

The request body reaches the app as it arrives (reading pauses while more than ``_HIGH_WATER`` bytes wait for the
app); a response with ``Content-Length`` goes as it is, one without it goes chunked (HTTP/1.1) or until the
connection closes (HTTP/1.0). After the response, and once the client has gone, ``receive`` answers
``http.disconnect``. An app that fails before it answers gets a 500 in the V2 error form; one that fails after
its response started has its connection closed, so that the client sees the response was cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from inferd.observability.request_context import HEADER as REQUEST_ID_HEADER
from inferd.observability.request_context import REQUEST_ID
from inferd.server.http.wire import (
    CHUNKED,
    CONNECTION_CLOSE,
    CONTINUE,
    LAST_CHUNK,
    Headers,
    chunk,
    error_parts,
    header_lines,
    status_line,
)

if TYPE_CHECKING:
    from inferd.server.http.protocol import Cycle, HTTPConnection

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HIGH_WATER = 1024 * 1024
"""Body bytes that may wait for the app before the connection stops reading."""
_DISCONNECT: Message = {"type": "http.disconnect"}


class ASGIExchange:
    def __init__(self, connection: HTTPConnection, cycle: Cycle, expect_continue: bool) -> None:
        self.connection = connection
        self.cycle = cycle
        self.expect_continue = expect_continue
        self.body: list[bytes] = []
        self.buffered = 0
        self.body_done = False
        self.gone = False
        self.response_started = False
        self.response_complete = False
        self.status = 500
        self.chunked = False
        self.head_only = cycle.method == b"HEAD"
        self.delivered_end = False
        """The last piece of the body went to the app."""
        self.headers: Headers | None = None
        """The response's headers, until they are written."""
        self.wakeup: asyncio.Future[None] | None = None

    # -- what the connection tells ---------------------------------------------------------------
    def received(self, data: bytes, done: bool = False) -> None:
        if self.response_complete:
            return  # answered without reading it all: the rest is dropped
        if data:
            self.body.append(data)
            self.buffered += len(data)
            if self.buffered > _HIGH_WATER and not self.connection.read_paused:
                self.connection.read_paused = True
                self.connection.transport.pause_reading()
        self.body_done = done
        self._wake()

    def disconnected(self) -> None:
        self.gone = True
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    # -- the app ---------------------------------------------------------------------------------
    async def run(self, app: ASGIApp) -> None:
        token = REQUEST_ID.set(self.cycle.request_id)
        try:
            await app(self.scope(), self.receive, self.send)
        except Exception as exc:
            log.exception("unexpected error handling %s %s", self.cycle.method.decode("latin-1"),
                          self.cycle.path.decode("latin-1"))
            if not self.response_started:
                self._answer_error(500, f"internal server error: {type(exc).__name__}: {exc}")
            elif not self.response_complete:
                self.connection.transport.close()  # the client must see the response was cut short
        finally:
            REQUEST_ID.reset(token)
        if not self.response_started and not self.gone:
            log.error("the app returned without answering %s %s", self.cycle.method.decode("latin-1"),
                      self.cycle.path.decode("latin-1"))
            self._answer_error(500, "internal server error: the app sent no response")
        elif not self.response_complete and not self.connection.transport.is_closing():
            self.connection.transport.close()

    def scope(self) -> Scope:
        cycle = self.cycle
        connection = self.connection
        url = cycle.url
        if not url.startswith(b"/"):  # absolute-form (a proxy's request) or "*"
            parsed = httptools.parse_url(url) if url != b"*" else None
            raw_path = parsed.path if parsed is not None and parsed.path else b"/"
            query = parsed.query or b"" if parsed is not None else b""
        else:
            raw_path, _, query = url.partition(b"?")
        path = raw_path.decode("utf-8", "replace")
        transport = connection.transport
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": connection.parser.get_http_version(),
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "scheme": connection.front.scheme,
            "method": cycle.method.decode("ascii"),
            "root_path": "",
            "path": unquote(path) if "%" in path else path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": cycle.headers,
            "state": {},
        }

    async def receive(self) -> Message:
        if self.expect_continue and not self.cycle.continued and not self.gone:
            self.cycle.continued = True
            self.connection.transport.write(CONTINUE)
        while True:
            if self.gone:
                return _DISCONNECT
            if self.body or (self.body_done and not self.delivered_end):
                return self._next_piece()
            if self.response_complete:
                return _DISCONNECT
            wakeup = self.wakeup = asyncio.get_running_loop().create_future()
            try:
                await wakeup
            finally:
                if self.wakeup is wakeup:  # a receive() cancelled late must not drop the next one's wakeup
                    self.wakeup = None

    def _next_piece(self) -> Message:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.buffered = 0
        more = not self.body_done
        if not more:
            self.delivered_end = True
        connection = self.connection
        if connection.read_paused and connection.active is self.cycle and not connection.waiting:
            connection.read_paused = False
            connection.transport.resume_reading()
        return {"type": "http.request", "body": data, "more_body": more}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("the app sent http.response.start twice")
            self.response_started = True
            self.status = int(message["status"])
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
        elif kind == "http.response.body":
            if not self.response_started or self.response_complete:
                raise RuntimeError("the app sent a response body before http.response.start or after its end")
            more = bool(message.get("more_body", False))
            self._write(bytes(message.get("body", b"")), more)
            if more:
                await self.connection.drain()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _write(self, body: bytes, more: bool) -> None:
        transport = self.connection.transport
        if self.gone or transport.is_closing():
            self.response_complete = not more
            return
        out = []
        if self.headers is not None:
            out.append(self._head(body, more))
            self.headers = None
        if body and not self.head_only:
            out.append(chunk(body) if self.chunked else body)
            self.cycle.sent += len(body)
        if not more:
            if self.chunked and not self.head_only:
                out.append(LAST_CHUNK)
            self.response_complete = True
        transport.write(b"".join(out))
        if not more:
            self._finish()

    def _head(self, body: bytes, more: bool) -> bytes:
        cycle = self.cycle
        headers = self.headers
        assert headers is not None
        has_length = any(name == b"content-length" for name, _ in headers)
        if not has_length:
            if not more:
                headers.append((b"content-length", b"%d" % len(body)))
            elif cycle.connection.parser.get_http_version() == "1.1":
                self.chunked = True
            else:
                cycle.keep_alive = False  # the body ends when the connection closes
        closing = not cycle.keep_alive or cycle.connection.front.stopping
        head = [status_line(self.status), header_lines(headers), REQUEST_ID_HEADER, b": ",
                cycle.request_id.encode(), b"\r\n"]
        if self.chunked:
            head.append(CHUNKED)
        if closing:
            head.append(CONNECTION_CLOSE)
        head.append(b"\r\n")
        return b"".join(head)

    def _answer_error(self, status: int, message: str) -> None:
        _, headers, content = error_parts(status, message)
        self.status = status
        self.headers = headers
        self.response_started = True
        self.response_complete = True
        transport = self.connection.transport
        if not transport.is_closing():
            transport.write(self._head(content, False) + (b"" if self.head_only else content))
        self.cycle.sent = len(content)
        self._finish()

    def _finish(self) -> None:
        cycle = self.cycle
        cycle.status = self.status
        cycle.responded = True
        self._wake()  # a receive() waiting for the disconnect ends now
        if cycle.complete:
            self.connection.finish(cycle)
        else:
            cycle.dropping = True  # the body that still comes is dropped; the request ends when it has come


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
