"""What the connection protocol asks of the routes it answers itself, without ASGI.

A native route reads its request body whole (bounded by its limit, checked against ``Content-Length`` before the
body is read) and answers through the :class:`Exchange` it is given, maybe later, from any callback on the event
loop. Every other request goes to the ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from inferd.server.http.wire import Headers

Parts = tuple[int, Headers, bytes]
"""A whole answer: status, headers and body."""


class Exchange(Protocol):
    """One request on a connection, as a native route sees it."""

    headers: Headers
    """The request's headers, names in lower case, in the order they came."""
    is_gone: Callable[[], bool]
    """Whether the client went away: nothing more will reach it."""

    def respond(self, status: int, head: bytes, content: bytes) -> None:
        """Answer: ``head`` is the response's header lines (each ending in CRLF) but the request id's and the
        connection's, which the protocol adds."""
        ...


class NativeRoute(Protocol):
    max_body_bytes: int
    """Largest request body this route reads."""

    def too_large(self, size: int) -> Parts:
        """The answer to a body over ``max_body_bytes`` (``size``: what ``Content-Length`` declared, or what came
        so far)."""
        ...

    def refusal(self, headers: Headers) -> Parts | None:
        """An answer decided from the headers alone (a missing or wrong API key), or None to read the body."""
        ...

    def handle(self, exchange: Exchange, body: bytes) -> None:
        """Answer the request, now or later, through ``exchange``."""
        ...


class Router(Protocol):
    def find(self, method: bytes, path: bytes) -> NativeRoute | None:
        """The native route for this method and path (the path before any ``?``, still percent-encoded), or None
        for the ASGI app."""
        ...
