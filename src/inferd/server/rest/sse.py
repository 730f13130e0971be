"""Server-sent events: a stream of JSON ``data:`` lines, as OpenAI's streaming responses and Triton's
``generate_stream`` send them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    """Starlette closes ``body`` when the client goes away, which frees a generation's slot. ``headers``: more
    response headers (the endpoint variant that answers)."""
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled if the client goes away first (its request body has been read already): a whole
    (non-streamed) generation stops then, and frees its slot."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise asyncio.CancelledError("the client went away")
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
