"""V2 inference over REST: the one function every way of arriving goes through, and the routes the connection
answers itself.

:meth:`InferRoute.handle` hands a request body to the DataPlane as a :class:`~inferd.codecs.v2_body.V2Body` and
:func:`answer_parts` turns its outcome into a response; :func:`infer` is the same for a coroutine (the FastAPI
route that documents the path). :class:`InferRoute` and :class:`ProbeRoute` are the native routes of
:class:`RESTRouter`: ``POST /v2/models/{m}[/versions/{v}]/infer`` and the V2 health probes, answered on the
connection without ASGI, checked against the same API keys and body limit as everything else.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from functools import partial

import orjson

from inferd.calls import Routing
from inferd.codecs import v2_binary
from inferd.codecs.v2_body import Encoded, V2Body
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.security.auth import Authenticator, key_from_headers
from inferd.security.scopes import Scope as AuthScope
from inferd.server.http.coding import compress, response_coding
from inferd.server.http.routes import Exchange, Parts
from inferd.server.http.wire import Headers, header_lines
from inferd.server.rest.body import INLINE_BYTES, BodyLimit
from inferd.server.rest.errors import HTTPError, failure_parts
from inferd.server.routing_headers import FORCED, KEY, answered_line, routing_from_headers
from inferd.shared_memory import Regions

INFER_PATH = re.compile(rb"^/v2/models/(?P<model>[^/%]+)(?:/versions/(?P<version>[^/%]+))?/infer$")
"""Percent-encoded names go to the FastAPI route, which decodes them."""
PROBES = frozenset({b"/v2/health/live", b"/v2/health/ready"})
_HEADER_LENGTH = v2_binary.HEADER_LENGTH.encode()
_CONTENT_ENCODING = b"content-encoding"
_ACCEPT_ENCODING = b"accept-encoding"
_COMPRESSED_HEAD = b"content-encoding: %s\r\nvary: accept-encoding\r\n"
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\n"
_BINARY_HEAD = b"content-type: application/octet-stream\r\ncontent-length: %d\r\n" + _HEADER_LENGTH + b": %d\r\n"
_REMEMBERED_PATHS = 1024

Outcome = Encoded | BaseException
"""How an inference ends: the response body and its JSON header's length, or the error."""


async def infer(dataplane: DataPlane, body: bytes, header_length: str | None, model: str, version: str | None,  # noqa: PLR0913, PLR0917
                is_disconnected: Callable[[], bool] | None = None, regions: Regions | None = None,
                routing: Routing | None = None) -> Encoded:
    """One V2 inference request (JSON, or the binary tensor extension) through the DataPlane: the outcome, or its
    error raised. ``regions``: the caller's shared memory regions; ``routing``: what the request asks of an
    endpoint (the DataPlane records in it the variant that answered)."""
    call = V2Body(body, header_length, model, version, regions)
    call.routing = routing
    return await dataplane.infer(call, is_disconnected)


def answer_parts(outcome: Outcome, model: str, coding: str | None = None) -> tuple[int, bytes, bytes]:
    """Status, header lines and body answering an inference; a successful one compressed in ``coding`` when the
    client accepts one (see :func:`~inferd.server.http.coding.response_coding`), as Triton compresses."""
    if type(outcome) is tuple:
        content, json_length = outcome
        extra = b""
        if coding is not None:
            content = compress(content, coding)
            extra = _COMPRESSED_HEAD % coding.encode()
        if json_length is None:
            return 200, _JSON_HEAD % len(content) + extra, content
        return 200, _BINARY_HEAD % (len(content), json_length) + extra, content
    assert isinstance(outcome, BaseException)
    status, headers, content = failure_parts(outcome, f"an inference on {model}")
    return status, header_lines(headers), content


def _answer(exchange: Exchange, model: str, coding: str | None, outcome: Outcome,
            routing: Routing | None = None) -> None:
    if coding is not None and type(outcome) is tuple and len(outcome[0]) > INLINE_BYTES:  # compressed in a thread
        done = asyncio.get_running_loop().run_in_executor(None, answer_parts, outcome, model, coding)
        done.add_done_callback(partial(_answer_later, exchange, model, routing))
        return
    status, head, content = answer_parts(outcome, model, coding)
    if routing is not None:
        head += answered_line(routing)
    exchange.respond(status, head, content)


def _answer_later(exchange: Exchange, model: str, routing: Routing | None,
                  done: asyncio.Future[tuple[int, bytes, bytes]]) -> None:
    try:
        status, head, content = done.result()
    except BaseException as exc:  # whatever it is, the client gets an answer
        status, head, content = answer_parts(exc, model)
    exchange.respond(status, head + answered_line(routing), content)


def _answer_call(exchange: Exchange, model: str, coding: str | None, call: V2Body, outcome: Outcome) -> None:
    _answer(exchange, model, coding, outcome, call.routing)


class InferRoute:
    """``POST`` to one model (version)'s inference path."""

    __slots__ = ("_answer", "_auth", "_dataplane", "_limit", "max_body_bytes", "model", "path", "version")

    def __init__(self, router: RESTRouter, path: bytes, model: str, version: str | None) -> None:
        self._dataplane = router.dataplane
        self._auth = router.authenticator
        self._limit = router.body_limit
        self.max_body_bytes = router.body_limit.limit
        self.path = path.decode("latin-1")
        self.model = model
        self.version = version

    def too_large(self, size: int) -> Parts:
        return failure_parts(self._limit.error())

    def refusal(self, headers: Headers) -> Parts | None:
        if self._auth is None:
            return None
        try:
            self._auth.check_headers(headers, AuthScope.INFER, "POST", self.path)
        except InferError as exc:
            return failure_parts(exc)
        return None

    def handle(self, exchange: Exchange, body: bytes) -> None:
        header_length = content_encoding = accept_encoding = None
        routed = False
        for name, value in exchange.headers:
            if name == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif name == _CONTENT_ENCODING:
                content_encoding = value
            elif name == _ACCEPT_ENCODING:
                accept_encoding = value
            elif name in FORCED or name == KEY:
                routed = True
        routing = routing_from_headers(exchange.headers) if routed else None
        coding = None if accept_encoding is None else response_coding(accept_encoding)
        if content_encoding is not None:
            try:
                inflater = self._limit.inflater(content_encoding)
                if inflater is not None and len(body) > INLINE_BYTES:  # inflated in a thread
                    done = asyncio.get_running_loop().run_in_executor(None, self._limit.inflate, inflater, body, True)
                    done.add_done_callback(partial(self._inflated, exchange, header_length, coding, routing))
                    return
                if inflater is not None:
                    body = self._limit.inflate(inflater, body, last=True)
            except HTTPError as exc:
                _answer(exchange, self.model, None, exc)
                return
        self._start(exchange, body, header_length, coding, routing)

    def _inflated(self, exchange: Exchange, header_length: str | None, coding: str | None, routing: Routing | None,
                  done: asyncio.Future[bytes]) -> None:
        try:
            body = done.result()
        except BaseException as exc:  # 413 or 400 from inflating, or the server stopping
            _answer(exchange, self.model, None, exc)
            return
        self._start(exchange, body, header_length, coding, routing)

    def _start(self, exchange: Exchange, body: bytes, header_length: str | None, coding: str | None,
               routing: Routing | None) -> None:
        """Answer one request: the answer gets the outcome once, maybe before this returns."""
        try:
            call = V2Body(body, header_length, self.model, self.version, self._regions(exchange.headers))
        except InferError as exc:  # malformed JSON or header length
            _answer(exchange, self.model, None, exc)
            return
        call.routing = routing
        self._dataplane.submit(call, partial(_answer_call, exchange, self.model, coding, call), exchange.is_gone)

    def _regions(self, headers: Headers) -> Regions | None:
        """The caller's shared memory regions; with API keys, whose they are is found only if a tensor names one."""
        registry = self._dataplane.shared_memory
        if registry is None or self._auth is None:
            return None if registry is None else registry.shared
        return registry.caller(partial(_owner, self._auth, headers))


def _owner(authenticator: Authenticator, headers: Headers) -> str:
    """The name of the caller's API key (checked already, by :meth:`InferRoute.refusal`)."""
    return authenticator.principal(key_from_headers(headers)).name


def ready_body(dataplane: DataPlane, ok: bool, plain: bytes) -> bytes:
    """The ready probe's body: ``{"ready": ...}``, and what the server cannot do beside the models (asynchronous
    inference off, and why) as ``"unavailable"``, when there is something to say."""
    missing = dataplane.unavailable_services()
    if not missing:
        return plain
    return orjson.dumps({"ready": ok, "unavailable": missing})


class ProbeRoute:
    """``GET /v2/health/live`` and ``/v2/health/ready``: open to all (load balancers carry no key)."""

    __slots__ = ("_dataplane", "_live")

    max_body_bytes = 0

    def __init__(self, dataplane: DataPlane, path: bytes) -> None:
        self._dataplane = dataplane
        self._live = path == b"/v2/health/live"

    def too_large(self, size: int) -> Parts:
        return failure_parts(BodyLimit(0, "a health probe takes no body").error())

    def refusal(self, headers: Headers) -> Parts | None:
        return None

    def handle(self, exchange: Exchange, body: bytes) -> None:
        if self._live:
            ok, content = self._dataplane.live(), b'{"live":%s}'
        else:
            ok, content = self._dataplane.ready(), b'{"ready":%s}'
        content %= b"true" if ok else b"false"
        if not self._live:
            content = ready_body(self._dataplane, ok, content)
        exchange.respond(200 if ok else 503, _JSON_HEAD % len(content), content)


class RESTRouter:
    """The native routes of inferd's REST API (a :class:`~inferd.server.http.routes.Router`)."""

    def __init__(self, dataplane: DataPlane, max_body_bytes: int, authenticator: Authenticator | None = None) -> None:
        self.dataplane = dataplane
        self.authenticator = authenticator
        self.body_limit = BodyLimit(max_body_bytes, "max_body_bytes")
        self._probes = {path: ProbeRoute(dataplane, path) for path in PROBES}
        self._infer: dict[bytes, InferRoute | None] = {}
        """The route of each inference path seen (bounded): clients repeat their paths."""

    def find(self, method: bytes, path: bytes) -> InferRoute | ProbeRoute | None:
        if method == b"POST":
            known = self._infer
            return known[path] if path in known else self._remember(path)
        if method == b"GET":
            return self._probes.get(path)
        return None

    def _remember(self, path: bytes) -> InferRoute | None:
        match = INFER_PATH.match(path)
        route = None
        if match is not None and path.isascii():  # other names go to the FastAPI route, which words the error
            version = match["version"]
            route = InferRoute(self, path, match["model"].decode(), None if version is None else version.decode())
        if len(self._infer) >= _REMEMBERED_PATHS:
            self._infer.clear()
        self._infer[path] = route
        return route
