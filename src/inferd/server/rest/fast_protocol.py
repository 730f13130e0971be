"""uvicorn's HTTP/1.1 protocol (httptools), answering V2 inference and the health probes without ASGI.

Even through the bare ASGI app in :mod:`inferd.server.rest.fast_infer`, uvicorn builds a scope, a request
cycle with an event, two message dictionaries with validated headers and a task per request: about as much
CPU as the inference itself for a small model (measured with py-spy). This protocol sees the request line
and headers as they are parsed; when the request is ``POST /v2/models/{m}[/versions/{v}]/infer`` or a
``GET`` health probe, it collects the body itself, hands it to :meth:`FastInfer.start_infer` (the DataPlane
the ASGI route calls, with no coroutine for a plain request) and writes the response in one ``transport.write``
when the answer comes. Everything else, and every case with a subtlety
(``Expect: 100-continue``, upgrades, percent-encoded paths, a request pipelined behind another one still
being answered), goes to uvicorn's own handling and the ASGI app, unchanged.

It relies on uvicorn's ``HttpToolsProtocol`` internals (``cycle``, ``pipeline``, ``on_response_complete``, and
``data_received``, which it repeats);
the uvicorn version range in pyproject is pinned for that, and tests/unit/server/test_fast_protocol.py runs
both paths over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import perf_counter_ns
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from inferd.codecs import v2_binary
from inferd.dataplane import EncodedAnswer
from inferd.errors import InferError
from inferd.observability.request_context import HEADER as REQUEST_ID_HEADER
from inferd.observability.request_context import REQUEST_ID
from inferd.security.asgi import auth_error_parts
from inferd.security.scopes import Scope as AuthScope
from inferd.server.rest.fast_infer import (
    PROBES_BYTES,
    FastInfer,
    Headers,
    probe_parts,
    response_parts,
)
from inferd.server.rest.http_error import error_parts

log = logging.getLogger(__name__)

_CONNECTION_CLOSE = b"connection: close\r\n"
_REQUEST_ID = b"x-request-id: "
_REQUEST_ID_NAME = REQUEST_ID_HEADER
_HEADER_LENGTH = v2_binary.HEADER_LENGTH.encode()
_END_OF_HEAD = b"\r\n\r\n"
"""Ends the request id's header line, and the head."""
_END_OF_HEAD_CLOSING = b"\r\n" + _CONNECTION_CLOSE + b"\r\n"
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\n"
_BINARY_HEAD = b"content-type: application/octet-stream\r\ncontent-length: %d\r\n" + _HEADER_LENGTH + b": %d\r\n"
_READ_SLACK = 256 * 1024
"""Most bytes of one socket read (asyncio's and uvloop's): the head guard in ``data_received`` counts whole
reads, so it allows this much beyond ``max_header_bytes`` before it steps in."""


_LINGER_S = 1.0
"""How long a refused connection stays open, dropping what the client still sends, before it closes."""


class _HeadersTooLargeError(Exception):
    """Raised from a parser callback to stop parsing a request whose head is over the limit."""


class _NoEvent:
    """Stands in for the request cycle's ``message_event``, which uvicorn sets when the connection drops."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _FastCycle:
    """One request answered by :class:`FastPathProtocol`. Carries the attributes uvicorn's protocol reads from
    its current cycle (``response_complete``, ``keep_alive``, ``disconnected``, ``message_event``), so that a
    request pipelined behind this one waits for it exactly as behind an ASGI cycle."""

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "model", "path", "receiving", "refusal",
                 "request_id", "response_complete", "size", "started", "too_large", "version")

    def __init__(self, path: bytes, model: str | None, version: str | None, keep_alive: bool) -> None:
        self.path = path
        self.model = model
        self.version = version
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.refusal: tuple[int, Headers, bytes] | None = None
        """An answer decided before the body came (with ``too_large`` set, so that the body is dropped)."""
        self.receiving = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NO_EVENT
        self.request_id = ""
        self.started = 0
        """perf_counter_ns() when the headers were read (only with the access log on)."""


class FastPathProtocol(HttpToolsProtocol):
    """Give uvicorn this class as its ``http`` protocol, with a :class:`FastInfer` as the app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        if not isinstance(app, FastInfer):
            raise TypeError(f"FastPathProtocol serves a FastInfer app, not {type(app).__name__}")
        self.fast = app
        self.authenticator = app.authenticator
        self.max_header_bytes = app.limits.max_header_bytes
        self.header_bytes = 0
        """Bytes of the current request's line and headers, as the parser reports them."""
        self.head_open = True
        """Whether the request being read is still in its line and headers."""
        self.head_read = 0
        self.headers_too_large = False
        self.refused = False
        """An answer that closes the connection went out (see :meth:`refuse`)."""
        self.idle_since: float | None = None
        """Event-loop time of the last response while no request is in progress, else None."""
        self.head_started: float | None = None
        """Event-loop time the current request's first byte came (its line and headers are due within
        ``header_timeout_s``)."""
        self.header_timeout = app.limits.header_timeout_s
        self.body_timeout = app.limits.body_timeout_s
        self.body_seen: float | None = None
        """Event-loop time the current request's headers or latest body piece came, while its body is being
        read; None otherwise (the next piece is due within ``body_timeout_s``)."""

    # -- limits: connections and header size ----------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.fast.limits.max_connections:
            self.headers = []  # what uvicorn reads if the refused request asks for an upgrade
            self.parser = httptools.HttpRequestParser(_Refusal(self))
            self.loop.call_later(self.timeout_keep_alive, transport.close)  # even if no request ever comes
            return
        self.idle_since = self.loop.time()  # a connection that never sends a request is idle from the start
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after a refusal: what the client still sends is dropped
        # uvicorn's data_received, inline (this runs for every request), its keep-alive step being ours
        self.idle_since = None  # busy
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self.head_open:  # httptools keeps a header line to itself until it ends: bound what it holds
            self.head_read += len(data)
            if self.head_read > self.max_header_bytes + _READ_SLACK and not self.headers_too_large:
                self.headers_too_large = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self.headers_too_large:
            super().send_400_response(msg)
            return
        self.refuse(*error_parts(431, f"request line and headers are over the limit of {self.max_header_bytes} "
                                      "bytes (max_header_bytes)"))

    def refuse(self, status: int, headers: Headers, content: bytes) -> None:
        """Answer with ``status`` and close the connection, whatever the request was."""
        if self.transport.is_closing():
            return
        self.transport.write(_response(status, headers, content, _CONNECTION_CLOSE))
        # A lingering close: closing now, with the client's bytes still arriving, would send a reset that can
        # destroy the answer before the client reads it. Stop writing, drop what comes, close a little later.
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    # -- timeouts: one timer per connection, not one per response --------------------------------------
    # uvicorn arms a timer after every response and cancels it when the next bytes come: a timer handle and
    # a heap entry per request. Here a response only notes the time; the one timer, when it fires, closes a
    # connection idle for the whole keep-alive timeout, answers 408 to a request whose line and headers are
    # late or whose body stopped coming (uvicorn has neither limit: a client sending a byte now and then held
    # its connection forever), and otherwise waits out the rest.
    def _unset_keepalive_if_required(self) -> None:
        self.idle_since = None  # busy: called by uvicorn when bytes arrive

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.head_open and self.head_started is not None:  # a request's line and headers are coming
            left = self.head_started + self.header_timeout - now
            if left <= 0:
                self.refuse(*error_parts(408, f"the request line and headers did not arrive within "
                                              f"{self.header_timeout} s (header_timeout_s)"))
                return
        elif self.body_seen is not None:  # a request's body is coming
            if getattr(self.cycle, "expect_100_continue", False):  # its client waits for 100 Continue: not late
                self.body_seen = now
            left = self.body_seen + self.body_timeout - now
            if left <= 0:
                self._refuse_mid_request(408, f"no part of the request body arrived for {self.body_timeout} s "
                                              "(body_timeout_s)")
                return
        elif self.idle_since is None:
            return  # a request is being answered: its response arms the timer again
        else:
            left = self.idle_since + self.timeout_keep_alive - now
            if left <= 0:
                self.timeout_keep_alive_handler()
                return
        self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)

    def _refuse_mid_request(self, status: int, message: str) -> None:
        """Refuse the request being read; an app already given it (an ASGI route) sees the client gone."""
        cycle: Any = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.refuse(*error_parts(status, message))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's also builds the ASGI scope here; only requests that go to the app need one (_asgi_scope)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.header_length: bytes | None = None
        """The ``Inference-Header-Content-Length`` header of the binary tensor extension, if present."""
        self.given_id: bytes | None = None
        """The ``X-Request-ID`` header, if present."""
        self.header_bytes = 0
        self.head_open = True
        self.head_read = 0
        self.head_started = now = self.loop.time()
        task = self.timeout_keep_alive_task  # due by the header deadline (a keep-alive timer usually is)
        if task is None or task.when() > now + self.header_timeout:
            if task is not None:
                task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(self.header_timeout, self._keep_alive_due)

    def _asgi_scope(self) -> None:
        """The ASGI scope uvicorn's ``on_message_begin`` would have built, for a request the app answers."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.max_header_bytes:
            self.headers_too_large = True
            raise _HeadersTooLargeError
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.max_header_bytes:
            self.headers_too_large = True
            raise _HeadersTooLargeError  # uvicorn answers the parser error with send_400_response: 431 here
        name = name.lower()  # what uvicorn's on_header does, inline: this runs for every header
        if name == _HEADER_LENGTH:
            if self.header_length is None:  # the first, as a scan of the headers would find
                self.header_length = value
        elif name == _REQUEST_ID_NAME:
            if self.given_id is None:
                self.given_id = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_open = False
        self.body_seen = self.loop.time()
        current = self.cycle
        if (current is None or current.response_complete) and not self.expect_100_continue:
            cycle = self._fast_cycle()
            if cycle is not None:
                observer = self.fast.observer  # the request's id (X-Request-ID or a new one), its start time
                cycle.request_id = observer.request_id(self.given_id)
                if observer.access_log:
                    cycle.started = perf_counter_ns()
                if self.authenticator is not None and cycle.model is not None:
                    self._authorize(cycle)
                self.cycle = cycle  # type: ignore[assignment]
                return
        self._asgi_scope()
        super().on_headers_complete()

    def _authorize(self, cycle: _FastCycle) -> None:
        assert self.authenticator is not None
        try:
            self.authenticator.check_headers(self.headers, AuthScope.INFER, "POST", cycle.path.decode())
        except InferError as exc:
            cycle.refusal = auth_error_parts(exc)
            cycle.too_large = True  # drop the body as it comes

    def on_body(self, body: bytes) -> None:
        self.body_seen = self.loop.time()
        cycle: Any = self.cycle  # uvicorn's RequestResponseCycle or ours
        if type(cycle) is not _FastCycle:
            super().on_body(body)
            return
        cycle.size += len(body)
        if cycle.size > self.fast.max_body_bytes:
            cycle.too_large = True
            cycle.body.clear()
        elif not cycle.too_large:
            cycle.body.append(body)

    def on_message_complete(self) -> None:
        self.body_seen = None
        cycle: Any = self.cycle  # uvicorn's RequestResponseCycle or ours
        if type(cycle) is not _FastCycle:
            super().on_message_complete()
            return
        cycle.receiving = False
        if cycle.model is None:
            self._respond(cycle, *probe_parts(self.fast.dataplane, cycle.path.decode()))
        elif cycle.too_large:
            if cycle.refusal is not None:
                self._respond(cycle, *cycle.refusal)
                return
            limit = self.fast.max_body_bytes
            self._respond(cycle, *error_parts(413, f"request body is over the limit of {limit} bytes "
                                                   "(max_body_bytes)"))
        else:
            body = cycle.body[0] if len(cycle.body) == 1 else b"".join(cycle.body)
            cycle.body = []
            assert cycle.model is not None
            token = REQUEST_ID.set(cycle.request_id)  # for log records and data capture; a task copies it
            try:
                length = self.header_length
                self.fast.start_infer(body, None if length is None else length.decode("latin-1"), cycle.model,
                                      cycle.version, self.transport.is_closing, partial(self._answer, cycle),
                                      self.tasks)
            finally:
                REQUEST_ID.reset(token)

    # -- answering -------------------------------------------------------------------------------
    def _fast_cycle(self) -> _FastCycle | None:
        """A cycle for this request if it is one the fast path answers, else None."""
        if self.parser.should_upgrade():
            return None
        url = self.url
        path = url.split(b"?", 1)[0] if b"?" in url else url
        if b"%" in path:
            return None
        method = self.parser.get_method()
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        if method == b"POST":
            targets = self.fast.targets  # infer_target's memory, without the call
            target = targets[path] if path in targets else self.fast.infer_target(path)
            if target is None:
                return None
            return _FastCycle(path, target[0], target[1], keep_alive)
        if method == b"GET" and path in PROBES_BYTES:
            return _FastCycle(path, None, None, keep_alive)
        return None

    def _answer(self, cycle: _FastCycle, outcome: EncodedAnswer) -> None:
        """Answer an inference: its body and JSON header's length (None: all JSON), or its error."""
        if type(outcome) is not tuple:
            self._respond(cycle, *response_parts(outcome, cycle.model or ""))
            return
        content, json_length = outcome
        if json_length is None:
            self._write(cycle, 200, _JSON_HEAD % len(content), content)
        else:
            self._write(cycle, 200, _BINARY_HEAD % (len(content), json_length), content)

    def _respond(self, cycle: _FastCycle, status: int, headers: Headers, content: bytes) -> None:
        self._write(cycle, status, b"".join([b"%s: %s\r\n" % pair for pair in headers]), content)

    def _write(self, cycle: _FastCycle, status: int, head: bytes, content: bytes) -> None:
        """Send the response (``head``: its header lines but the request id's and the connection's) and finish
        the request."""
        cycle.response_complete = True
        transport = self.transport
        if transport.is_closing():
            return
        end = _END_OF_HEAD if cycle.keep_alive else _END_OF_HEAD_CLOSING
        transport.write(b"".join((STATUS_LINE[status], head, _REQUEST_ID, cycle.request_id.encode(), end, content)))
        if not cycle.keep_alive:
            transport.close()
        if cycle.started:
            self.fast.observer.log_access("GET" if cycle.model is None else "POST", cycle.path.decode(), status,
                                          cycle.started, cycle.request_id, cycle.size, len(content))
        self.on_response_complete()


def _response(status: int, headers: Headers, content: bytes, more: bytes) -> bytes:
    """A whole HTTP/1.1 response; ``more`` is further header lines, each ending in CRLF."""
    out = [STATUS_LINE[status]]
    for name, value in headers:
        out += (name, b": ", value, b"\r\n")
    out += (more, b"\r\n", content)
    return b"".join(out)


class _Refusal:
    """Parser callbacks for a connection over ``max_connections``: its first request gets 503 and the
    connection closes."""

    def __init__(self, protocol: FastPathProtocol) -> None:
        self.protocol = protocol

    def on_headers_complete(self) -> None:
        if self.protocol.transport.is_closing():
            return
        limit = self.protocol.fast.limits.max_connections
        log.warning("refused an HTTP request: %d connections are open, the limit (max_connections) is %d",
                    len(self.protocol.connections) - 1, limit)
        status, headers, content = error_parts(
            503, f"the server has too many open connections (max_connections is {limit}); try again later", 1)
        self.protocol.refuse(status, headers, content)
