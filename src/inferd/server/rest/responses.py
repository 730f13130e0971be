"""Small helpers the FastAPI routes use: JSON responses, and any failure as a response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from inferd.server.rest.errors import HTTPError, failure_parts

JSON = "application/json"

__all__ = ["JSON", "HTTPError", "error_response", "failure_response", "json_response"]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def failure_response(error: BaseException, where: str = "") -> Response:
    """The V2 error form of any failure (see :func:`~inferd.server.rest.errors.failure_parts`)."""
    status, headers, content = failure_parts(error, where)
    return Response(content, status_code=status,
                    headers={name.decode("latin-1"): value.decode("latin-1") for name, value in headers})


def error_response(status: int, message: str) -> Response:
    """The V2 error form ``{"error": message}`` with this status (Retry-After on a 503 or 429 as for any failure)."""
    return failure_response(HTTPError(status, message))
