"""Every REST failure in one form: the V2 error body, the status from the one table in :mod:`inferd.server.status`,
``Retry-After`` on each 503 and 429, and ``WWW-Authenticate`` on each 401. The native routes, the FastAPI
exception handlers and the API-key middleware all answer through :func:`failure_parts`."""

from __future__ import annotations

import logging

from inferd.errors import ErrorCode, InferError
from inferd.server.http.wire import Headers, error_parts
from inferd.server.status import HTTP_CHALLENGE, HTTP_STATUS

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 1
"""Retry-After of a 503 or 429 whose cause names no better time."""
_RETRY_STATUSES = frozenset({429, 503})
_CHALLENGE = HTTP_CHALLENGE[ErrorCode.UNAUTHENTICATED]


class HTTPError(Exception):
    """A failure with its own HTTP status (413 body too large, 415 media type, ...)."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None,
                 header: tuple[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.header = header
        """One more response header (``Accept-Encoding`` of a 415 for a content coding)."""


def failure_parts(error: BaseException, where: str = "") -> tuple[int, Headers, bytes]:
    """Status, headers and V2 error body for any failure; an exception that is neither an :class:`InferError` nor
    an :class:`HTTPError` is a bug: logged (``where`` says what was being answered) and answered 500."""
    if isinstance(error, InferError):
        status, message, retry = HTTP_STATUS[error.code], error.message, error.retry_after_s
        challenge = HTTP_CHALLENGE.get(error.code)
    elif isinstance(error, HTTPError):
        status, message, retry = error.status, error.message, error.retry_after_s
        challenge = _CHALLENGE if status == 401 else error.header
    else:
        log.error("unexpected error answering %s", where or "a request", exc_info=error)
        return error_parts(500, f"internal server error: {type(error).__name__}: {error}")
    if retry is None and status in _RETRY_STATUSES:
        retry = DEFAULT_RETRY_AFTER_S
    return error_parts(status, message, retry, challenge)
