"""One HTTP/1.1 connection: requests parsed with httptools, answered in order, under the connection limits.

A request whose route the :class:`~inferd.server.http.routes.Router` knows (inference, the health probes) is
answered here: its body is read whole and handed to the route, which answers through the request's
:class:`Cycle` with one ``transport.write``; no ASGI scope, message dictionaries or task. Every other request goes
to the ASGI app through :class:`~inferd.server.http.asgi.ASGIExchange`.

Requests pipelined on one connection are read ahead (up to ``max_pipelined``, then reading pauses) and answered
one after the other. ``Expect: 100-continue`` gets its interim answer when the body is wanted: at once for a
native route whose limit the declared length fits, never for one it does not fit (413 and the connection
closes). A request with ``Upgrade`` is served as plain HTTP/1.1 (RFC 9110 lets a server ignore the header), and
the connection goes on as HTTP/1.1.

One timer per connection enforces the timeouts: a response only notes the time; when the timer fires it closes a
connection idle for the keep-alive timeout, answers 408 to a request whose line and headers are late or whose
body stopped coming, and otherwise waits out the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import httptools

from inferd.observability.request_context import REQUEST_ID, RequestObserver
from inferd.server.http.limits import HTTPLimits
from inferd.server.http.routes import NativeRoute, Parts, Router
from inferd.server.http.wire import CONNECTION_CLOSE, CONTINUE, Headers, error_parts, header_lines, status_line

if TYPE_CHECKING:
    from inferd.server.http.asgi import ASGIApp, ASGIExchange

log = logging.getLogger(__name__)

_READ_SLACK = 256 * 1024
"""Most bytes of one socket read (asyncio's and uvloop's): the head guard in ``data_received`` counts whole reads,
so it allows this much beyond ``max_header_bytes`` before it steps in."""
_LINGER_S = 1.0
"""How long a refused connection stays open, dropping what the client still sends, before it closes."""
_REQUEST_ID = b"x-request-id: "
_END = b"\r\n\r\n"
_END_CLOSING = b"\r\n" + CONNECTION_CLOSE + b"\r\n"
_CONTENT_LENGTH = b"content-length"
_EXPECT = b"expect"
_REQUEST_ID_NAME = b"x-request-id"


@dataclass(eq=False)
class Front:
    """What every connection of one server shares."""

    router: Router
    app_factory: Callable[[], ASGIApp]
    """Builds the ASGI app for every route the router does not answer (on first use, or at :meth:`build_app`)."""
    limits: HTTPLimits = field(default_factory=HTTPLimits)
    observer: RequestObserver = field(default_factory=RequestObserver)
    scheme: str = "http"
    connections: set[HTTPConnection] = field(default_factory=set)
    exchanges: set[asyncio.Task[None]] = field(default_factory=set)
    """ASGI requests in progress."""
    stopping: bool = False
    """Shutting down: every connection closes after its current response."""
    _app: ASGIApp | None = None

    def build_app(self) -> ASGIApp:
        if self._app is None:
            self._app = self.app_factory()
        return self._app


class _HeadersTooLargeError(Exception):
    """Raised from a parser callback to stop parsing a request whose head is over the limit."""


class Cycle:
    """One request on a connection, from its headers to its answer (the :class:`~.routes.Exchange` of a native
    route)."""

    __slots__ = ("asgi", "body", "complete", "connection", "continued", "declared", "dropping", "expect", "headers",
                 "is_gone", "keep_alive", "method", "path", "request_id", "responded", "route", "sent", "size",
                 "started", "status", "url")

    def __init__(self, connection: HTTPConnection, method: bytes, url: bytes, path: bytes, headers: Headers,
                 keep_alive: bool, route: NativeRoute | None) -> None:
        self.connection = connection
        self.is_gone = connection.transport.is_closing
        self.method = method
        self.url = url
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.route = route
        self.body: list[bytes] = []
        self.size = 0
        """Body bytes received."""
        self.complete = False
        """The whole request (its body included) has been read."""
        self.responded = False
        self.dropping = False
        """Answered before its body came (a refusal): the body is read and dropped."""
        self.request_id = ""
        self.started = 0
        """perf_counter_ns() at the end of the headers (only with the access log on)."""
        self.status = 0
        self.sent = 0
        self.asgi: ASGIExchange | None = None
        self.declared: int | None = None
        """The body's length as ``Content-Length`` gives it (None: chunked, or no body)."""
        self.expect = False
        """The client waits for ``100 Continue`` before it sends the body."""
        self.continued = False
        """``100 Continue`` went out."""

    def respond(self, status: int, head: bytes, content: bytes) -> None:
        """Answer (``head``: header lines but the request id's and the connection's) and, once the request has been
        read whole, finish it."""
        if self.responded:
            return
        self.responded = True
        connection = self.connection
        transport = connection.transport
        if not transport.is_closing():
            end = _END if self.keep_alive and not connection.front.stopping else _END_CLOSING
            transport.write(b"".join((status_line(status), head, _REQUEST_ID, self.request_id.encode(), end,
                                      content)))
        self.status = status
        self.sent = len(content)
        if self.complete:
            connection.finish(self)
        else:
            self.dropping = True
            self.body = []

    def respond_parts(self, parts: Parts) -> None:
        status, headers, content = parts
        self.respond(status, header_lines(headers), content)

    def log_access(self) -> None:
        if self.started:
            self.connection.front.observer.log_access(self.method.decode("latin-1"), self.path.decode("latin-1"),
                                                      self.status, self.started, self.request_id, self.size, self.sent)


class HTTPConnection(asyncio.Protocol):
    """Give ``loop.create_server`` a factory of these, all sharing one :class:`Front`."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.limits = front.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.reading: Cycle | None = None
        """The request being read."""
        self.active: Cycle | None = None
        """The request being answered (the head of the line)."""
        self.waiting: deque[Cycle] = deque()
        """Requests read ahead of their turn."""
        self.over_limit = False
        self.refused = False
        """An answer that closes the connection went out (see :meth:`refuse`): what comes is dropped."""
        self.read_paused = False
        self.raw_left = 0
        """Body bytes still to come of a request with ``Upgrade`` (which httptools does not read)."""
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        """Event-loop time of the last response while no request is in progress, else None."""
        self.head_started: float | None = None
        self.body_seen: float | None = None
        """Event-loop time of the headers or the latest body piece of the request being read, else None."""
        self.head_open = False
        self.head_read = 0
        self.header_bytes = 0
        self.headers_too_large = False
        self.url = b""
        self.headers: Headers = []
        self.content_length: bytes | None = None
        self.expect_continue = False
        self.given_id: bytes | None = None

    # -- the connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        front = self.front
        front.connections.add(self)
        if len(front.connections) > self.limits.max_connections:
            self.over_limit = True  # its first request gets 503
        self.idle_since = self.loop.time()  # a connection that never sends a request is idle from the start
        self.timer = self.loop.call_later(self.limits.keep_alive_timeout_s, self._due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for cycle in (self.active, *self.waiting):
            if cycle is not None and cycle.asgi is not None:
                cycle.asgi.disconnected()
        self.waiting.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark (or the connection is gone)."""
        if self.write_paused and not self.transport.is_closing():
            self.drained = self.loop.create_future()
            await self.drained

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after a refusal: what the client still sends is dropped
        self.idle_since = None  # busy
        if self.raw_left:
            self._upgrade_body(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Served as plain HTTP/1.1. httptools stops at an upgrade and hands over what follows the headers as
            # the new protocol's bytes: the request's own body (counted by its Content-Length), then the next
            # request, which a new parser reads.
            self.parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0]:]
            if rest or self.raw_left:
                self._upgrade_body(rest)
            return
        except httptools.HttpParserError:
            if self.headers_too_large:
                self._head_too_large()
            else:
                self.refuse(*error_parts(400, "malformed HTTP request"))
            return
        if self.head_open:  # httptools keeps a header line to itself until it ends: bound what it holds
            self.head_read += len(data)
            if self.head_read > self.limits.max_header_bytes + _READ_SLACK:
                self._head_too_large()

    def _upgrade_body(self, data: bytes) -> None:
        """Bytes after the headers of a request with ``Upgrade``: its body first, then the next requests."""
        if self.raw_left:
            piece = data[:self.raw_left]
            self.raw_left -= len(piece)
            if piece:
                self.on_body(piece)
            data = data[len(piece):]
            if self.raw_left:
                return
            self.on_message_complete()
        if data:
            self.data_received(data)

    def refuse(self, status: int, headers: Headers, content: bytes) -> None:
        """Answer with ``status`` and close the connection, whatever the request was."""
        if self.refused or self.transport.is_closing():
            return
        # Refused before (or while) its request was read, the answer still carries a request id as every other
        # does: the one the client sent if its header got that far, else a new one, so the refusal can be traced.
        reading = self.reading
        request_id = reading.request_id if reading is not None and reading.request_id \
            else self.front.observer.request_id(self.given_id)
        self.transport.write(b"".join((status_line(status), header_lines(headers), _REQUEST_ID, request_id.encode(),
                                       b"\r\n", CONNECTION_CLOSE, b"\r\n", content)))
        self._linger()

    def _linger(self) -> None:
        """A lingering close: closing now, with the client's bytes still arriving, would send a reset that can
        destroy the answer before the client reads it. Stop writing, drop what comes, close a little later."""
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _head_too_large(self) -> None:
        self.refuse(*error_parts(431, f"request line and headers are over the limit of "
                                      f"{self.limits.max_header_bytes} bytes (max_header_bytes)"))

    def close_if_idle(self) -> None:
        """At shutdown: close now if no request is in progress, else after the current answer."""
        if self.active is None and self.reading is None:
            self.transport.close()

    # -- the timer -------------------------------------------------------------------------------
    def _due(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.limits
        if self.head_open and self.head_started is not None:  # a request's line and headers are coming
            left = self.head_started + limits.header_timeout_s - now
            if left <= 0:
                self.refuse(*error_parts(408, f"the request line and headers did not arrive within "
                                              f"{_seconds(limits.header_timeout_s)} s (header_timeout_s)"))
                return
        elif self.body_seen is not None:  # a request's body is coming
            reading = self.reading
            if reading is not None and reading.expect and not reading.continued:
                self.body_seen = now  # its client waits for 100 Continue, which the app has not asked for yet
            left = self.body_seen + limits.body_timeout_s - now
            if left <= 0:
                if self.reading is not None and self.reading.asgi is not None:
                    self.reading.asgi.disconnected()
                self.refuse(*error_parts(408, f"no part of the request body arrived for "
                                              f"{_seconds(limits.body_timeout_s)} s (body_timeout_s)"))
                return
        elif self.idle_since is None:
            return  # a request is being answered: its response arms the timer again
        else:
            left = self.idle_since + limits.keep_alive_timeout_s - now
            if left <= 0:
                self.transport.close()
                return
        self.timer = self.loop.call_later(left, self._due)

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.content_length = None
        self.expect_continue = False
        self.given_id = None
        self.header_bytes = 0
        self.head_open = True
        self.head_read = 0
        self.head_started = now = self.loop.time()
        timer = self.timer  # due by the header deadline (a keep-alive timer usually is)
        if timer is None or timer.when() > now + self.limits.header_timeout_s:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_later(self.limits.header_timeout_s, self._due)

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.limits.max_header_bytes:
            self.headers_too_large = True
            raise _HeadersTooLargeError
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            self.headers_too_large = True
            raise _HeadersTooLargeError  # the parser error that follows is answered 431
        name = name.lower()
        if name == _CONTENT_LENGTH:
            self.content_length = value
        elif name == _REQUEST_ID_NAME:
            if self.given_id is None:
                self.given_id = value
        elif name == _EXPECT and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_open = False
        self.body_seen = self.loop.time()
        parser = self.parser
        url = self.url
        path = url.split(b"?", 1)[0] if b"?" in url else url
        method = parser.get_method()
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
        front = self.front
        route = None if self.over_limit else front.router.find(method, path)
        cycle = Cycle(self, method, url, path, self.headers, keep_alive, route)
        if self.content_length is not None:
            cycle.declared = int(self.content_length)  # httptools refused one that is not a number
        cycle.expect = self.expect_continue
        if parser.should_upgrade() and cycle.declared is None \
                and any(name == b"transfer-encoding" for name, _ in cycle.headers):
            self.refuse(*error_parts(400, "a request with Upgrade and a chunked body is not supported"))
            return
        observer = front.observer
        cycle.request_id = observer.request_id(self.given_id)
        if observer.access_log:
            cycle.started = perf_counter_ns()
        self.reading = cycle
        if self.active is None:
            self._begin(cycle)
        else:
            self.waiting.append(cycle)
            if len(self.waiting) >= self.limits.max_pipelined and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        self.body_seen = self.loop.time()
        cycle = self.reading
        assert cycle is not None
        cycle.size += len(body)
        if cycle.dropping:
            return
        if cycle.route is None:
            if cycle.asgi is None:  # its turn has not come: keep the body for it
                cycle.body.append(body)
            else:
                cycle.asgi.received(body)
            return
        if cycle.size > cycle.route.max_body_bytes:
            parts = cycle.route.too_large(cycle.size)
            if cycle is self.active:
                cycle.respond_parts(parts)
            else:  # answered in its turn
                cycle.body = [b""]
                cycle.route = _Refused(parts)
            return
        cycle.body.append(body)

    def on_message_complete(self) -> None:
        cycle = self.reading
        assert cycle is not None
        if cycle.declared and cycle.size < cycle.declared and self.parser.should_upgrade():
            self.raw_left = cycle.declared - cycle.size  # read by _upgrade_body, which calls this again
            return
        self.body_seen = None
        self.reading = None
        cycle.complete = True
        if cycle is not self.active:
            return  # its turn comes when the requests before it are answered
        if cycle.responded:
            self.finish(cycle)
        elif cycle.route is not None:
            self._dispatch(cycle)
        elif cycle.asgi is not None:
            cycle.asgi.received(b"", done=True)

    # -- answering -------------------------------------------------------------------------------
    def _begin(self, cycle: Cycle) -> None:
        """The request's turn: it is answered next."""
        self.active = cycle
        route = cycle.route
        if self.over_limit:
            self._refuse_over_limit()
            return
        if route is None:
            self._start_asgi(cycle)
            return
        refusal = route.refusal(cycle.headers)
        declared = cycle.declared
        if refusal is None and declared is not None and declared > route.max_body_bytes:
            refusal = route.too_large(declared)
            if cycle.expect and not cycle.complete:
                cycle.keep_alive = False  # its client may never send the body: no request can follow
        if refusal is not None:
            cycle.respond_parts(refusal)
            if not cycle.keep_alive and not cycle.complete:
                self._linger()  # the body may never come, or come: either way the connection ends here
            return
        if cycle.complete:
            self._dispatch(cycle)
        elif cycle.expect:
            cycle.continued = True
            self.transport.write(CONTINUE)

    def _dispatch(self, cycle: Cycle) -> None:
        """Hand a native route its request, read whole."""
        assert cycle.route is not None
        body = cycle.body[0] if len(cycle.body) == 1 else b"".join(cycle.body)
        cycle.body = []
        token = REQUEST_ID.set(cycle.request_id)  # for log records; a task started from here copies it
        try:
            cycle.route.handle(cycle, body)
        except Exception as exc:  # a route's bug: answer it, keep the connection
            log.exception("answering %s %s failed", cycle.method.decode(), cycle.path.decode("latin-1"))
            cycle.respond_parts(error_parts(500, f"internal server error: {type(exc).__name__}: {exc}"))
        finally:
            REQUEST_ID.reset(token)

    def _start_asgi(self, cycle: Cycle) -> None:
        from inferd.server.http.asgi import ASGIExchange

        exchange = cycle.asgi = ASGIExchange(self, cycle, cycle.expect and not cycle.complete)
        for piece in cycle.body:  # what came before its turn
            exchange.received(piece)
        cycle.body = []
        if cycle.complete:
            exchange.received(b"", done=True)
        task = self.loop.create_task(exchange.run(self.front.build_app()))
        self.front.exchanges.add(task)
        task.add_done_callback(self.front.exchanges.discard)

    def _refuse_over_limit(self) -> None:
        limit = self.limits.max_connections
        log.warning("refused an HTTP request: %d connections are open, the limit (max_connections) is %d",
                    len(self.front.connections) - 1, limit)
        self.refuse(*error_parts(503, f"the server has too many open connections (max_connections is {limit}); "
                                      "try again later", 1))

    def finish(self, cycle: Cycle) -> None:
        """The request is answered and read whole: the next one's turn, or the connection waits (or closes)."""
        if cycle is not self.active:
            return
        self.active = None
        cycle.log_access()
        transport = self.transport
        if transport.is_closing():
            return
        if not cycle.keep_alive or self.front.stopping:
            transport.close()
            return
        if self.read_paused and len(self.waiting) < self.limits.max_pipelined:
            self.read_paused = False
            transport.resume_reading()
        if self.waiting:
            self._begin(self.waiting.popleft())
            return
        if self.reading is None:
            self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.limits.keep_alive_timeout_s, self._due)


class _Refused:
    """The route of a request refused before its turn (its body over the limit): answered when its turn comes."""

    max_body_bytes = 0

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def too_large(self, size: int) -> Parts:
        return self.parts

    def refusal(self, headers: Headers) -> Parts:
        return self.parts

    def handle(self, exchange: Any, body: bytes) -> None:  # pragma: no cover - refusal() always answers first
        exchange.respond_parts(self.parts)


def _seconds(value: float) -> str:
    return f"{value:g}"
