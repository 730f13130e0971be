"""A transport-level HTTP failure, and the V2 error response, free of any web framework so the inference fast
path can use them."""

from __future__ import annotations

import orjson

Headers = list[tuple[bytes, bytes]]


class HTTPError(Exception):
    """A failure with its own HTTP status (413 body too large, 415 media type, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_parts(status: int, message: str, retry_after_s: int | None = None,
                extra: tuple[bytes, bytes] | None = None) -> tuple[int, Headers, bytes]:
    """Status, headers and body of the V2 error form ``{"error": message}``; ``extra`` is one more header."""
    content = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    if retry_after_s is not None:
        headers.append((b"retry-after", b"%d" % retry_after_s))
    if extra is not None:
        headers.append(extra)
    return status, headers, content
