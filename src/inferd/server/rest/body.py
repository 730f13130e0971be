"""The one size-limited request body reader of the REST routes: ``Content-Length`` is checked before anything is
read, a body without it is counted as it comes, and a body over the limit gets 413 with the same message wherever
it is sent (the native routes check the same :class:`BodyLimit` on the connection itself).

A body sent with ``Content-Encoding: gzip`` or ``deflate`` is inflated here, a piece at a time, and the limit holds
for it both as sent and as inflated (:mod:`inferd.server.http.coding`): a zip bomb gets the same 413 without being
inflated past the limit. Any other coding gets 415, with the codings inferd reads in ``Accept-Encoding``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inferd.server.http.coding import (
    ACCEPTED,
    CodingError,
    InflatedTooLargeError,
    Inflater,
    UnsupportedCodingError,
    request_coding,
)
from inferd.server.rest.errors import HTTPError

if TYPE_CHECKING:  # the FastAPI routes' type: the native routes that serve before FastAPI is imported need none
    from starlette.requests import Request

_ACCEPT_ENCODING = (b"accept-encoding", ACCEPTED.encode())
INLINE_BYTES = 256 * 1024
"""Bodies up to this size are inflated (and compressed) on the event loop, in well under a millisecond; bigger ones
in a thread, where zlib lets go of the GIL, so that one large body does not hold up every other connection."""


@dataclass(frozen=True, slots=True)
class BodyLimit:
    limit: int
    setting: str
    """What sets it, named in the refusal (``max_body_bytes``)."""

    def error(self, coding: str | None = None) -> HTTPError:
        inflated = f" once inflated from {coding}" if coding else ""
        return HTTPError(413, f"request body is over the limit of {self.limit} bytes{inflated} ({self.setting})")

    def check_declared(self, declared: str | None) -> None:
        """Refuse a ``Content-Length`` that is not a number, or over the limit."""
        if declared is None:
            return
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > self.limit:
            raise self.error()

    def inflater(self, content_encoding: str | bytes | None) -> Inflater | None:
        """What inflates a body sent with this ``Content-Encoding`` (None for an uncompressed one); 415 for a coding
        inferd does not read."""
        try:
            coding = request_coding(content_encoding)
        except UnsupportedCodingError as exc:
            raise HTTPError(415, str(exc), header=_ACCEPT_ENCODING) from None
        return None if coding is None else Inflater(coding, self.limit)

    def inflate(self, inflater: Inflater, data: bytes, last: bool = False) -> bytes:
        """The next piece of a compressed body, inflated (and its end checked when ``last``): 413 past the limit,
        400 for data that is not what its coding says."""
        try:
            return inflater.feed(data) + inflater.finish() if last else inflater.feed(data)
        except InflatedTooLargeError:
            raise self.error(inflater.coding) from None
        except CodingError as exc:
            raise HTTPError(400, str(exc)) from None

    async def inflate_whole(self, inflater: Inflater, body: bytes) -> bytes:
        """A whole compressed body, inflated (in a thread when it is large)."""
        if len(body) <= INLINE_BYTES:
            return self.inflate(inflater, body, last=True)
        return await asyncio.to_thread(self.inflate, inflater, body, True)

    async def inflated(self, chunks: AsyncIterator[bytes], content_encoding: str | None) -> AsyncIterator[bytes]:
        """A body's pieces as they come, inflated if it is compressed (in a thread: a piece may inflate to many
        megabytes)."""
        inflater = self.inflater(content_encoding)
        if inflater is None:
            async for chunk in chunks:
                yield chunk
            return
        async for chunk in chunks:
            piece = await asyncio.to_thread(self.inflate, inflater, chunk)
            if piece:
                yield piece
        self.inflate(inflater, b"", last=True)


async def read_body(request: Request, limit: BodyLimit) -> bytes:
    """The request body, at most ``limit`` bytes as sent and as inflated."""
    limit.check_declared(request.headers.get("content-length"))
    inflater = limit.inflater(request.headers.get("content-encoding"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit.limit:
            raise limit.error()
        chunks.append(chunk)
    body = b"".join(chunks)
    return body if inflater is None else await limit.inflate_whole(inflater, body)
