"""One pure ASGI wrapper that checks the API key of every request the app behind it answers.

No per-route code: the route table in :mod:`inferd.security.scopes` decides what each method and path needs. The
native routes (:mod:`inferd.server.rest.v2_infer`) run the same :class:`~inferd.security.auth.Authenticator`
before they read a body, and every refusal is answered by :func:`~inferd.server.rest.errors.failure_parts`.
"""

from __future__ import annotations

from inferd.errors import InferError
from inferd.security.auth import Authenticator
from inferd.security.scopes import RouteScopes
from inferd.server.http.asgi import ASGIApp, Receive, Scope, Send
from inferd.server.openai import errors as openai_errors
from inferd.server.openai.router import is_openai_path
from inferd.server.rest.errors import failure_parts


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
                # the OpenAI client reads OpenAI's error form; every other client the V2 form
                answer = openai_errors.error_parts if is_openai_path(path) else failure_parts
                status, headers, content = answer(exc)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": content})
                return
            scope["inferd.principal"] = principal
        await self.app(scope, receive, send)
