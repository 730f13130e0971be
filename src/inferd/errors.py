"""Transport-neutral errors.

The core never speaks HTTP or gRPC: it raises :class:`InferError` with an :class:`ErrorCode`, and each
transport maps the code to its own status in one table.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """What went wrong, independent of the transport that reports it."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    """The request is malformed or does not match the model's signature."""
    NOT_FOUND = "NOT_FOUND"
    """Unknown model or version."""
    UNAVAILABLE = "UNAVAILABLE"
    """The model exists but cannot serve now (not loaded, failed to load, shutting down)."""
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    """The request's deadline passed before it could run."""
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    """A queue or size limit was hit."""
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    """The operation does not fit the current state (for example loading a model with a broken config)."""
    ABORTED = "ABORTED"
    """A change lost a race with another one (an admin change made against a state that moved on)."""
    INTERNAL = "INTERNAL"
    """The model or the server failed while handling a valid request."""
    UNAUTHENTICATED = "UNAUTHENTICATED"
    """The call needs an API key and came with none, or with one the server does not know."""
    PERMISSION_DENIED = "PERMISSION_DENIED"
    """The call's API key is valid but lacks the scope the call needs."""
    UNIMPLEMENTED = "UNIMPLEMENTED"
    """The way the call came cannot serve it (Triton's UNSUPPORTED: a decoupled model asked for one answer)."""


class InferError(Exception):
    """An error with a neutral code and a message meant for the caller."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        """When to try again, for refusals under load (HTTP sends it as Retry-After)."""

    def __repr__(self) -> str:
        return f"InferError({self.code.value}, {self.message!r})"


def invalid(message: str) -> InferError:
    return InferError(ErrorCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> InferError:
    return InferError(ErrorCode.NOT_FOUND, message)


def unavailable(message: str) -> InferError:
    return InferError(ErrorCode.UNAVAILABLE, message)


def internal(message: str) -> InferError:
    return InferError(ErrorCode.INTERNAL, message)
