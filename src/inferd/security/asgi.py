"""One pure ASGI wrapper that checks the API key of every request the app behind it answers.

No per-route code: the route table in :mod:`inferd.security.scopes` decides what each method and path needs.
The inference fast paths (:mod:`inferd.server.rest.fast_protocol` and :mod:`inferd.server.rest.fast_infer`)
run the same :class:`~inferd.security.auth.Authenticator` before they answer inference themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from inferd.errors import InferError
from inferd.security.auth import Authenticator
from inferd.security.scopes import RouteScopes
from inferd.server.rest.http_error import error_parts
from inferd.server.status import HTTP_CHALLENGE, HTTP_STATUS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def auth_error_parts(exc: InferError) -> tuple[int, Headers, bytes]:
    """Status, headers and V2 error body refusing a call (401 carries ``WWW-Authenticate: Bearer``)."""
    return error_parts(HTTP_STATUS[exc.code], exc.message, extra=HTTP_CHALLENGE.get(exc.code))


class AuthMiddleware:
    """Refuse HTTP requests whose key lacks the scope their route needs; pass the rest to ``app``.

    The principal of an accepted request is put in the ASGI scope under ``inferd.principal``."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, routes: RouteScopes) -> None:
        self.app = app
        self.authenticator = authenticator
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            method, path = scope.get("method", "GET"), scope["path"]
            try:
                principal = self.authenticator.check_headers(
                    scope["headers"], self.routes.scope_for(method, path), method, path)
            except InferError as exc:
                status, headers, content = auth_error_parts(exc)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": content})
                return
            scope["inferd.principal"] = principal
        await self.app(scope, receive, send)
