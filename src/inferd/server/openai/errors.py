"""OpenAI's error form for the routes under ``/openai/v1``, and the route class that answers every failure in it.

OpenAI answers ``{"error": {"message", "type", "param", "code"}}``; the stock ``openai`` client picks its exception
class from the status (400 ``BadRequestError``, 404 ``NotFoundError``, 429 ``RateLimitError``, ...) and shows the
message. inferd's neutral :class:`~inferd.errors.InferError` codes keep their HTTP status from the one table in
:mod:`inferd.server.status`; this module only chooses OpenAI's ``type`` and ``code`` for them. A 429 or 503 carries
``Retry-After`` (the client waits that long before it retries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from inferd.errors import ErrorCode, InferError
from inferd.server.rest.errors import DEFAULT_RETRY_AFTER_S, HTTPError
from inferd.server.status import HTTP_CHALLENGE, HTTP_STATUS

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 503})

_KINDS: dict[ErrorCode, tuple[str, str | None]] = {
    ErrorCode.INVALID_ARGUMENT: ("invalid_request_error", None),
    ErrorCode.FAILED_PRECONDITION: ("invalid_request_error", None),
    ErrorCode.ABORTED: ("invalid_request_error", "conflict"),
    ErrorCode.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    ErrorCode.RESOURCE_EXHAUSTED: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorCode.UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorCode.DEADLINE_EXCEEDED: ("server_error", "timeout"),
    ErrorCode.INTERNAL: ("server_error", None),
    ErrorCode.UNAUTHENTICATED: ("authentication_error", "invalid_api_key"),
    ErrorCode.PERMISSION_DENIED: ("permission_error", None),
    ErrorCode.UNIMPLEMENTED: ("invalid_request_error", None),
}
"""OpenAI's error ``type`` and ``code`` for each neutral code (the status comes from ``HTTP_STATUS``)."""


def type_for_status(status: int) -> str:
    """OpenAI's error ``type`` for a status that has no neutral code behind it (413, 415, 405, ...)."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


class OpenAIError(Exception):
    """A failure in OpenAI's form: its status, message, ``type``, the request field at fault (``param``) and a
    machine-readable ``code``."""

    def __init__(self, status: int, message: str, *, kind: str | None = None, param: str | None = None,
                 code: str | None = None, retry_after_s: int | None = None,
                 challenge: tuple[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = kind or type_for_status(status)
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.challenge = challenge

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    """400 ``invalid_request_error``: the request field ``param`` is wrong (the message says how)."""
    return OpenAIError(400, message, kind="invalid_request_error", param=param, code=code)


def unsupported(param: str, detail: str = "") -> OpenAIError:
    """400 for a field inferd does not implement, naming it (``detail`` may say what is supported instead)."""
    message = f"{param!r} is not supported by this server" + (f": {detail}" if detail else "")
    return invalid_request(message, param, "unsupported_parameter")


def model_not_found(model: str, detail: str = "") -> OpenAIError:
    """404 for a ``model`` the server does not serve."""
    message = f"The model {model!r} does not exist" + (f": {detail}" if detail else "")
    return OpenAIError(404, message, kind="invalid_request_error", param="model", code="model_not_found")


def from_infer_error(error: InferError, param: str | None = None) -> OpenAIError:
    """An :class:`InferError` in OpenAI's form, with the status the REST table gives its code. ``param`` names the
    request field behind it when the caller knows it (``model`` for a model lookup)."""
    status = HTTP_STATUS[error.code]
    kind, code = _KINDS[error.code]
    if error.code is ErrorCode.NOT_FOUND and param is None:
        param = "model"
    return OpenAIError(status, error.message, kind=kind, param=param, code=code, retry_after_s=error.retry_after_s,
                       challenge=HTTP_CHALLENGE.get(error.code))


def as_openai_error(error: BaseException, where: str = "") -> OpenAIError:
    """Any failure in OpenAI's form; an exception inferd did not raise on purpose is a bug: logged (``where`` says
    what was being answered) and answered 500."""
    if isinstance(error, OpenAIError):
        return error
    if isinstance(error, InferError):
        return from_infer_error(error)
    if isinstance(error, HTTPError):
        challenge = HTTP_CHALLENGE[ErrorCode.UNAUTHENTICATED] if error.status == 401 else None
        return OpenAIError(error.status, error.message, retry_after_s=error.retry_after_s, challenge=challenge)
    if isinstance(error, StarletteHTTPException):  # routing: unknown path under the base URL, wrong method
        return OpenAIError(error.status_code, str(error.detail), code="not_found" if error.status_code == 404 else None)
    log.error("unexpected error answering %s", where or "an OpenAI request", exc_info=error)
    return OpenAIError(500, f"internal server error: {type(error).__name__}: {error}", kind="server_error")


def error_parts(error: BaseException, where: str = "") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of any failure in OpenAI's form (``Retry-After`` on a 429 or 503)."""
    failure = as_openai_error(error, where)
    content = orjson.dumps(failure.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    retry = failure.retry_after_s
    if retry is None and failure.status in _RETRY_STATUSES:
        retry = DEFAULT_RETRY_AFTER_S
    if retry is not None:
        headers.append((b"retry-after", b"%d" % retry))
    if failure.challenge is not None:
        headers.append(failure.challenge)
    return failure.status, headers, content


def error_response(error: BaseException, where: str = "") -> Response:
    status, headers, content = error_parts(error, where)
    return Response(content, status_code=status,
                    headers={name.decode("latin-1"): value.decode("latin-1") for name, value in headers})


class OpenAIRoute(APIRoute):
    """A route whose every failure is answered in OpenAI's form; the rest of the app keeps the V2 form. Every route
    module of this package builds its router with ``APIRouter(route_class=OpenAIRoute)``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_response(exc, f"{request.method} {request.url.path}")

        return answer
