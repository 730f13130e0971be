"""A transport-level HTTP failure, free of any web framework so the inference fast path can raise it."""

from __future__ import annotations


class HTTPError(Exception):
    """A failure with its own HTTP status (413 body too large, 415 media type, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
