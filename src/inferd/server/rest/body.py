"""The one size-limited request body reader of the REST routes: ``Content-Length`` is checked before anything is
read, a body without it is counted as it comes, and a body over the limit gets 413 with the same message wherever
it is sent (the native routes check the same :class:`BodyLimit` on the connection itself)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from inferd.server.rest.errors import HTTPError


@dataclass(frozen=True, slots=True)
class BodyLimit:
    limit: int
    setting: str
    """What sets it, named in the refusal (``max_body_bytes``)."""

    def error(self) -> HTTPError:
        return HTTPError(413, f"request body is over the limit of {self.limit} bytes ({self.setting})")

    def check_declared(self, declared: str | None) -> None:
        """Refuse a ``Content-Length`` that is not a number, or over the limit."""
        if declared is None:
            return
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > self.limit:
            raise self.error()


async def read_body(request: Request, limit: BodyLimit) -> bytes:
    """The request body, at most ``limit`` bytes."""
    limit.check_declared(request.headers.get("content-length"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit.limit:
            raise limit.error()
        chunks.append(chunk)
    return b"".join(chunks)
