"""uvicorn's HTTP/1.1 protocol (httptools), answering V2 inference and the health probes without ASGI.

Even through the bare ASGI app in :mod:`inferd.server.rest.fast_infer`, uvicorn builds a scope, a request
cycle with an event, two message dictionaries with validated headers and a task per request: about as much
CPU as the inference itself for a small model (measured with py-spy). This protocol sees the request line
and headers as they are parsed; when the request is ``POST /v2/models/{m}[/versions/{v}]/infer`` or a
``GET`` health probe, it collects the body itself, calls the same :func:`infer_response` the ASGI route
calls and writes the response in one ``transport.write``. Everything else, and every case with a subtlety
(``Expect: 100-continue``, upgrades, percent-encoded paths, a request pipelined behind another one still
being answered), goes to uvicorn's own handling and the ASGI app, unchanged.

It relies on uvicorn's ``HttpToolsProtocol`` internals (``cycle``, ``pipeline``, ``on_response_complete``);
the uvicorn version range in pyproject is pinned for that, and tests/unit/server/test_fast_protocol.py runs
both paths over real sockets.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from inferd.server.eager import start_eagerly
from inferd.server.rest.fast_infer import (
    INFER_PATH_BYTES,
    PROBES_BYTES,
    FastInfer,
    Headers,
    error_parts,
    infer_response,
    probe_parts,
)

_CONNECTION_CLOSE = b"connection: close\r\n"


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

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "model", "path", "receiving",
                 "response_complete", "size", "too_large", "version")

    def __init__(self, path: bytes, model: str | None, version: str | None, keep_alive: bool) -> None:
        self.path = path
        self.model = model
        self.version = version
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.receiving = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NO_EVENT


class FastPathProtocol(HttpToolsProtocol):
    """Give uvicorn this class as its ``http`` protocol, with a :class:`FastInfer` as the app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        if not isinstance(app, FastInfer):
            raise TypeError(f"FastPathProtocol serves a FastInfer app, not {type(app).__name__}")
        self.fast = app

    # -- parser callbacks ------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        current = self.cycle
        if (current is None or current.response_complete) and not self.expect_100_continue:
            cycle = self._fast_cycle()
            if cycle is not None:
                self.cycle = cycle  # type: ignore[assignment]
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
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
        cycle: Any = self.cycle  # uvicorn's RequestResponseCycle or ours
        if type(cycle) is not _FastCycle:
            super().on_message_complete()
            return
        cycle.receiving = False
        if cycle.model is None:
            self._respond(cycle, *probe_parts(self.fast.dataplane, cycle.path.decode()))
        elif cycle.too_large:
            limit = self.fast.max_body_bytes
            self._respond(cycle, *error_parts(413, f"request body is over the limit of {limit} bytes"))
        else:
            body = cycle.body[0] if len(cycle.body) == 1 else b"".join(cycle.body)
            cycle.body = []
            assert cycle.model is not None
            answer = infer_response(self.fast.dataplane, body, _header_length(self.headers), cycle.model,
                                    cycle.version, self.transport.is_closing)
            start_eagerly(answer, partial(self._respond_parts, cycle), self.tasks)

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
            match = INFER_PATH_BYTES.match(path)
            if match is None:
                return None
            version = match["version"]
            return _FastCycle(path, match["model"].decode(), None if version is None else version.decode(), keep_alive)
        if method == b"GET" and path in PROBES_BYTES:
            return _FastCycle(path, None, None, keep_alive)
        return None

    def _respond_parts(self, cycle: _FastCycle, parts: tuple[int, Headers, bytes]) -> None:
        self._respond(cycle, *parts)

    def _respond(self, cycle: _FastCycle, status: int, headers: Headers, content: bytes) -> None:
        cycle.response_complete = True
        transport = self.transport
        if transport.is_closing():
            return
        out = [STATUS_LINE[status]]
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            out.append(_CONNECTION_CLOSE)
        out += (b"\r\n", content)
        transport.write(b"".join(out))
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()



def _header_length(headers: Headers) -> str | None:
    """The ``Inference-Header-Content-Length`` header of the binary tensor extension, if present."""
    for name, value in headers:
        if name == b"inference-header-content-length":
            return value.decode("latin-1")
    return None
