"""What a Ray Serve replica answers over HTTP: inferd's REST app, less the routes that cannot work there.

A Serve deployment is several replicas behind Serve's proxy, each with its own DataPlane and no state shared
between them but the model repository (and the job store, when one is given). A route whose effect would stay in
the one replica that happened to answer (loading a model, an endpoint's rollout, a shared memory region; without
a shared job store, an asynchronous or batch job) is refused with 501 and the reason, in the V2 error form,
before the app sees it. Every response names the
replica that answered in an ``inferd-replica`` header (statistics and ``/metrics`` are that replica's).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferd.server.rest.responses import error_response

__all__ = ["ALWAYS_REFUSED", "ASYNC_REFUSED", "REPLICA_HEADER", "Refusal", "ServeRoutes", "refusals"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REPLICA_HEADER = b"inferd-replica"
NOT_IMPLEMENTED = 501


@dataclass(frozen=True)
class Refusal:
    """Requests whose path matches ``pattern`` (and whose method is one of ``methods``, when given) get 501."""

    pattern: re.Pattern[str]
    reason: str
    methods: frozenset[str] = frozenset()

    def refuses(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and self.pattern.fullmatch(path) is not None


_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"

ALWAYS_REFUSED: tuple[Refusal, ...] = (
    Refusal(re.compile(r"/v2/repository/models/[^/]+/(?:load|unload)"),
            "loading and unloading models is not served on Ray Serve: it would change the one replica that "
            "answered. The deployment's repository and model control decide what every replica loads; deploy "
            "again to change them", frozenset({"POST"})),
    Refusal(re.compile(r"/v2/endpoints(?:/.*)?"),
            "endpoints are not served on Ray Serve: every replica would keep its own endpoint state and run its "
            "own rollouts. Call the models by name, or split traffic between Serve applications"),
    Refusal(re.compile(r"/v2/(?:system|cuda)sharedmemory/region/[^/]+/register"),
            "shared memory is not served on Ray Serve: the replica that answers may run on another host than the "
            "client, and each replica would know its own regions only", frozenset({"POST"})),
)
"""Routes a Serve replica never serves."""

ASYNC_REFUSED: tuple[Refusal, ...] = (
    Refusal(re.compile(rf"{_MODEL}/infer-async|/v2/jobs(?:/.*)?"),
            "asynchronous inference on Ray Serve needs a job store that every replica shares: deploy with the "
            "setting job_store=postgresql://... (a replica's own SQLite queue would be lost with the replica)"),
    Refusal(re.compile(r"/v2/batch/jobs(?:/.*)?"),
            "batch jobs over HTTP on Ray Serve need a job store that every replica shares: deploy with the "
            "setting job_store=postgresql://... and batch_roots on storage every node reads, or run them on the "
            "same Ray cluster with `inferd batch run --engine ray`"),
)
"""Routes refused when the deployment has no shared (PostgreSQL) job store."""


def refusals(shared_job_store: bool) -> tuple[Refusal, ...]:
    """The routes a replica refuses: :data:`ALWAYS_REFUSED`, and the async routes without a shared job store."""
    return ALWAYS_REFUSED if shared_job_store else ALWAYS_REFUSED + ASYNC_REFUSED


class ServeRoutes:
    """An ASGI app: refuses the requests of ``refused`` with 501 (V2 error form), passes the rest (and lifespan
    events) to ``app``, and adds ``inferd-replica: <replica>`` to every HTTP response."""

    def __init__(self, app: ASGIApp, refused: Sequence[Refusal], replica: str) -> None:
        self.app = app
        self._refused = tuple(refused)
        self._replica = replica.encode("latin-1")

    def reason(self, method: str, path: str) -> str | None:
        """Why this request is refused, or None when the app serves it."""
        return next((r.reason for r in self._refused if r.refuses(method, path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        named = self._naming(send)
        reason = self.reason(scope["method"], _route_path(scope))
        if reason is not None:
            await error_response(NOT_IMPLEMENTED, reason)(scope, receive, named)
            return
        await self.app(scope, receive, named)

    def _naming(self, send: Send) -> Send:
        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REPLICA_HEADER, self._replica)]
            await send(message)

        return named


def _route_path(scope: Scope) -> str:
    """The path below the application's route prefix (Serve gives it as ``root_path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path
