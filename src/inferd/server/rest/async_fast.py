"""``POST .../infer-async`` as a bare ASGI app in front of the FastAPI app, like the synchronous fast path.

Accepting a small job is a body read, a digest and one group-committed insert; through FastAPI the routing and
middleware cost about three times that (measured with py-spy), which halved the accepted jobs per second. Here it
is one regular expression and the same :func:`~inferd.server.rest.async_routes.accept` the FastAPI route runs.
Every other request goes to the wrapped app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import orjson

from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.jobs.service import AsyncService
from inferd.server.rest.async_routes import Submission, accept, owner_of
from inferd.server.rest.fast_infer import ASGIApp, Receive, Scope, Send
from inferd.server.rest.http_error import HTTPError
from inferd.server.status import HTTP_STATUS

log = logging.getLogger(__name__)

SUBMIT_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer-async$")


class ClientGoneError(Exception):
    """The client closed the connection before its body arrived."""


class AsyncFastPath:
    def __init__(self, app: ASGIApp, dataplane: DataPlane, service: AsyncService) -> None:
        self.app = app
        self.dataplane = dataplane
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = SUBMIT_PATH.match(scope["path"])
            if match is not None:
                await self._submit(scope, receive, send, match["model"], match["version"])
                return
        await self.app(scope, receive, send)

    async def _submit(self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            call = Submission(headers, _chunks(receive), _base_url(scope, headers), owner_of(scope))
            status, reply = await accept(self.dataplane, self.service, model, version, call)
        except InferError as exc:
            await _send(send, HTTP_STATUS[exc.code], {"error": exc.message})
        except HTTPError as exc:
            await _send(send, exc.status, {"error": exc.message})
        except ClientGoneError:
            return
        except Exception as exc:  # answer, never drop the connection silently
            log.exception("unexpected error accepting an asynchronous job for %s", model)
            await _send(send, 500, {"error": f"internal server error: {type(exc).__name__}: {exc}"})
        else:
            await _send(send, status, reply, reply["status_url"])


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _base_url(scope: Scope, headers: dict[str, str]) -> str:
    """What Starlette's ``request.base_url`` gives: scheme, Host header (or the bound address) and root path."""
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}/"


async def _send(send: Send, status: int, payload: dict[str, str], location: str | None = None) -> None:
    content = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    if location is not None:
        headers.append((b"location", location.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
