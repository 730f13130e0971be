"""How each transport reports a DataPlane error: one table per transport, nothing else decides."""

from __future__ import annotations

from inferd.errors import ErrorCode

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ABORTED: 409,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNIMPLEMENTED: 501,
}

HTTP_CHALLENGE: dict[ErrorCode, tuple[bytes, bytes]] = {
    ErrorCode.UNAUTHENTICATED: (b"www-authenticate", b"Bearer"),
}
"""A header that some statuses must carry (RFC 9110: a 401 names the authentication scheme)."""

GRPC_STATUS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    ErrorCode.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.ABORTED: "ABORTED",
    ErrorCode.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    ErrorCode.INTERNAL: "INTERNAL",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    ErrorCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    ErrorCode.UNIMPLEMENTED: "UNIMPLEMENTED",
}
"""Names of ``grpc.StatusCode`` members: names, so that this module (and the HTTP side) never imports grpc."""
