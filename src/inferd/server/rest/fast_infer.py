"""The inference route (and the health probes) as a bare ASGI app in front of FastAPI.

Inference is the one route on the hot path. Through FastAPI it pays for routing over every route, the
middleware stack, a Request object and dependency resolution: most of the server's CPU per request at this
model size (measured with py-spy). Here it is one regular expression, the body read, the DataPlane call and
the response, and the FastAPI route for the same path (kept for the OpenAPI docs) runs the same function.

The FastAPI app with every other route is built on first use, or by :meth:`FastInfer.build_app` once the
server is ready, so importing FastAPI (a quarter of a second) is not part of the cold start.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from inferd.codecs import v2_binary
from inferd.dataplane import DataPlane, EncodedAnswer
from inferd.errors import InferError
from inferd.observability.request_context import RequestObserver
from inferd.security.asgi import auth_error_parts
from inferd.security.auth import Authenticator
from inferd.security.scopes import Scope as AuthScope
from inferd.server.eager import start_eagerly
from inferd.server.rest.http_error import HTTPError, error_parts
from inferd.server.status import HTTP_STATUS

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
INFER_PATH_BYTES = re.compile(INFER_PATH.pattern.encode())
PROBES = frozenset({"/v2/health/live", "/v2/health/ready"})
PROBES_BYTES = frozenset(p.encode() for p in PROBES)
_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_HEADER_LENGTH = v2_binary.HEADER_LENGTH.encode()
_REMEMBERED_PATHS = 1024


async def run_infer(dataplane: DataPlane, body: bytes, header_length: str | None, model: str,
                    version: str | None, is_disconnected: Callable[[], bool] | None = None,
                    ) -> tuple[bytes, int | None]:
    """Decode a V2 request (JSON or binary extension), infer, encode. Returns the body and, when some output
    is binary, the length of its JSON header."""
    payload, tail = v2_binary.split_body(body, header_length)
    answer = await dataplane.infer_plain(payload, model, version, is_disconnected, tail)  # the usual form, at once
    if answer is not None:
        return answer
    return await run_decoded(dataplane, payload, tail, model, version, is_disconnected)


async def run_decoded(dataplane: DataPlane, payload: Any, tail: memoryview | None, model: str, version: str | None,
                      is_disconnected: Callable[[], bool] | None) -> tuple[bytes, int | None]:
    """A V2 request the plain form did not take, its JSON parsed: through the codecs' objects."""
    request = v2_binary.decode_payload(payload, tail, model, version)
    response = await dataplane.infer(request, is_disconnected)
    binary = v2_binary.binary_outputs(request, [o.name for o in response.outputs])
    return v2_binary.encode_response(response, binary)


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """What one HTTP connection may take (the body limit is FastInfer's own: the ASGI route checks it too)."""

    max_header_bytes: int = 64 * 1024
    max_connections: int = 1024
    header_timeout_s: int = 10
    body_timeout_s: int = 30


class FastInfer:
    """Serves POST /v2/models/{m}[/versions/{v}]/infer and the V2 health probes itself, and passes everything
    else to the app that ``app_factory`` builds."""

    def __init__(self, app_factory: Callable[[], ASGIApp], dataplane: DataPlane, max_body_bytes: int, *,
                 authenticator: Authenticator | None = None, limits: HTTPLimits | None = None,
                 observer: RequestObserver | None = None) -> None:
        self._app_factory = app_factory
        self._app: ASGIApp | None = None
        self._app_lock = threading.Lock()
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.authenticator = authenticator
        """Checks inference calls' API keys here; the app that ``app_factory`` builds checks its own."""
        self.limits = limits or HTTPLimits()
        """Enforced by :class:`~inferd.server.rest.fast_protocol.FastPathProtocol`, which reads them here."""
        self.observer = observer or RequestObserver()
        """Request ids and the access log: for the fast path, which calls it itself, and for every ASGI request
        through the one wrapper ``_observed``."""
        self._observed = self.observer.wrap(self._route)
        self.targets: dict[bytes, tuple[str, str | None] | None] = {}
        """What :meth:`infer_target` found for each path (bounded)."""

    def infer_target(self, path: bytes) -> tuple[str, str | None] | None:
        """The model and version (None: the latest) an inference path names; None for any other path. Clients
        repeat their paths, so the answers are remembered (a bounded number of them)."""
        try:
            return self.targets[path]
        except KeyError:
            pass
        match = INFER_PATH_BYTES.match(path)
        target = None
        if match is not None:
            version = match["version"]
            target = match["model"].decode(), None if version is None else version.decode()
        if len(self.targets) >= _REMEMBERED_PATHS:
            self.targets.clear()
        self.targets[path] = target
        return target

    def start_infer(self, body: bytes, header_length: str | None, model: str, version: str | None,
                    is_disconnected: Callable[[], bool] | None, answer: Callable[[EncodedAnswer], None],
                    tasks: set[Any]) -> None:
        """Answer one V2 inference request for the HTTP protocol: ``answer`` gets the response body and its JSON
        header's length (None: all JSON), or the error, maybe before this returns. A plain request needs no
        coroutine (:meth:`DataPlane.infer_plain_soon`); any other runs without a task until it has to wait
        (:func:`~inferd.server.eager.start_eagerly`, which keeps it in ``tasks`` while it waits)."""
        dataplane = self.dataplane
        try:
            payload, tail = v2_binary.split_body(body, header_length)
            if dataplane.infer_plain_soon(payload, model, version, is_disconnected, tail, answer):
                return
        except Exception as exc:
            answer(exc)
            return
        start_eagerly(decoded_outcome(dataplane, payload, tail, model, version, is_disconnected), answer, tasks)

    def build_app(self) -> ASGIApp:
        """The full app, built once (thread-safe: the server may warm it from a thread)."""
        if self._app is None:
            with self._app_lock:
                if self._app is None:
                    self._app = self._app_factory()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._observed(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                match = INFER_PATH.match(scope["path"])
                if match is not None:
                    await self._infer(scope, receive, send, match["model"], match["version"])
                    return
            elif scope["method"] == "GET" and scope["path"] in PROBES:
                await self._probe(send, scope["path"])
                return
        await self.build_app()(scope, receive, send)

    async def _probe(self, send: Send, path: str) -> None:
        status, headers, content = probe_parts(self.dataplane, path)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _infer(self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None) -> None:
        try:
            if self.authenticator is not None:
                self.authenticator.check_headers(scope["headers"], AuthScope.INFER, "POST", scope["path"])
            header_length, declared = _headers(scope)
            body = await _read_body(receive, declared, self.max_body_bytes)
        except HTTPError as exc:
            status, headers, content = error_parts(exc.status, exc.message)
        except InferError as exc:  # the API key's refusal
            status, headers, content = auth_error_parts(exc)
        else:
            status, headers, content = await infer_response(self.dataplane, body, header_length, model, version,
                                                            disconnect_probe(receive))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


Headers = list[tuple[bytes, bytes]]


async def infer_response(dataplane: DataPlane, body: bytes, header_length: str | None, model: str,
                         version: str | None, is_disconnected: Callable[[], bool] | None) -> tuple[int, Headers, bytes]:
    """Status, headers and body answering one V2 inference request: every error becomes the V2 error form."""
    try:
        answer: EncodedAnswer = await run_infer(dataplane, body, header_length, model, version, is_disconnected)
    except Exception as exc:
        answer = exc
    return response_parts(answer, model)


async def decoded_outcome(dataplane: DataPlane, payload: Any, tail: memoryview | None, model: str,
                          version: str | None, is_disconnected: Callable[[], bool] | None) -> EncodedAnswer:
    """:func:`run_decoded`, its error returned rather than raised."""
    try:
        return await run_decoded(dataplane, payload, tail, model, version, is_disconnected)
    except Exception as exc:
        return exc


def response_parts(outcome: EncodedAnswer, model: str) -> tuple[int, Headers, bytes]:
    """Status, headers and body for an inference's outcome: the body and its JSON header's length (None: all
    JSON), or the error, in the V2 error form."""
    if isinstance(outcome, BaseException):
        if isinstance(outcome, InferError):
            return error_parts(HTTP_STATUS[outcome.code], outcome.message, outcome.retry_after_s)
        if isinstance(outcome, HTTPError):
            return error_parts(outcome.status, outcome.message)
        # never let one request take the connection down without an answer
        log.error("unexpected error in inference on %s", model, exc_info=outcome)
        return error_parts(500, f"internal server error: {type(outcome).__name__}: {outcome}")
    content, json_length = outcome
    if json_length is None:
        return 200, [(b"content-type", _JSON), (b"content-length", b"%d" % len(content))], content
    return 200, [(b"content-type", _BINARY), (b"content-length", b"%d" % len(content)),
                 (_HEADER_LENGTH, b"%d" % json_length)], content


def probe_parts(dataplane: DataPlane, path: str) -> tuple[int, Headers, bytes]:
    """The answer to GET /v2/health/live or /v2/health/ready."""
    if path == "/v2/health/live":
        ok, content = dataplane.live(), b'{"live":%s}'
    else:
        ok, content = dataplane.ready(), b'{"ready":%s}'
    content %= b"true" if ok else b"false"
    return 200 if ok else 503, [(b"content-type", _JSON), (b"content-length", b"%d" % len(content))], content


def _headers(scope: Scope) -> tuple[str | None, int | None]:
    header_length: str | None = None
    declared: int | None = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise HTTPError(400, f"Content-Length {value.decode(errors='replace')!r} is not a number")
            declared = int(value)
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
    return header_length, declared


async def _read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "the client went away while sending the request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def disconnect_probe(receive: Receive) -> Callable[[], bool] | None:
    """A cheap check of whether the client has closed the connection, asked only when a queued request is
    about to run. ASGI only tells through ``receive()``, which would need a task per request to watch;
    uvicorn's request cycle (the ``receive`` bound method's owner) keeps a ``disconnected`` flag, read here.
    Under another server there is no probe and queued requests of departed clients still run."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
