"""What one HTTP connection may take and how long it may keep the server waiting."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    max_header_bytes: int = 64 * 1024
    """Request line and headers of one request (431 above it)."""
    max_connections: int = 1024
    """Open connections; the first request of one more gets 503 and its connection closes."""
    header_timeout_s: float = 10
    """From a request's first byte to the end of its headers (408 after it)."""
    body_timeout_s: float = 30
    """Longest wait for the next piece of a request body (408 after it)."""
    keep_alive_timeout_s: float = 5
    """An idle connection is closed this long after its last response (or after it opened)."""
    max_pipelined: int = 16
    """Requests read ahead of the one being answered on a connection, before the connection stops reading."""
