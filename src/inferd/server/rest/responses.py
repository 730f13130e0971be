"""Small helpers every REST route uses: JSON responses, the error body, reading a bounded body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from inferd.errors import InferError
from inferd.server.rest.http_error import HTTPError
from inferd.server.status import HTTP_STATUS

JSON = "application/json"

__all__ = ["JSON", "HTTPError", "error_response", "infer_error_response", "json_response", "read_body"]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(status: int, message: str) -> Response:
    """The error form of the V2 protocol (and what perf_analyzer and tritonclient read): ``{"error": ...}``."""
    return json_response({"error": message}, status)


def infer_error_response(exc: InferError) -> Response:
    response = error_response(HTTP_STATUS[exc.code], exc.message)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with 413 before reading it where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
