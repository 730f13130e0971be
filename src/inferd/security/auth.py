"""Checking a request's API key: one sha256 and one dictionary lookup per request.

A key arrives as ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (HTTP headers, or gRPC metadata
under the same names). A missing or unknown key is ``UNAUTHENTICATED``; a known key without the scope the
call needs is ``PERMISSION_DENIED``. Keys never appear in messages or logs: a key is named by its record's
``name``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from inferd.errors import ErrorCode, InferError
from inferd.security.keys import ApiKey
from inferd.security.scopes import Scope

MISSING = "missing API key: send Authorization: Bearer <key> or x-api-key"
INVALID = "invalid API key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever holds a valid key."""

    name: str
    scopes: frozenset[Scope]
    allowed: tuple[Scope, ...] = field(init=False, repr=False, compare=False)
    """Every scope the key holds, ``admin`` expanded: a tuple, whose ``in`` tests identity first (an Enum's
    hash is a Python-level call, and this runs on every request)."""

    def __post_init__(self) -> None:
        allowed = tuple(Scope) if Scope.ADMIN in self.scopes else tuple(s for s in Scope if s in self.scopes)
        object.__setattr__(self, "allowed", allowed)

    def allows(self, scope: Scope) -> bool:
        return scope in self.allowed


class Authenticator:
    """Answers "may the holder of this key make this call?" from the configured key records."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_digest: dict[str, tuple[bytes, Principal]] = {
            k.sha256: (k.sha256.encode(), Principal(k.name, k.scopes)) for k in keys
        }
        if not self._by_digest:
            raise ValueError("an Authenticator needs at least one key")

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, key: bytes | None) -> Principal:
        """Who holds ``key``; UNAUTHENTICATED when it is missing or unknown."""
        if not key:
            raise InferError(ErrorCode.UNAUTHENTICATED, MISSING)
        digest = hashlib.sha256(key).hexdigest()
        found = self._by_digest.get(digest)
        # The lookup is by a digest the caller cannot choose; compare_digest keeps the final check constant-time.
        if found is None or not hmac.compare_digest(found[0], digest.encode()):
            raise InferError(ErrorCode.UNAUTHENTICATED, INVALID)
        return found[1]

    def check(self, key: bytes | None, scope: Scope | None, method: str, target: str) -> Principal | None:
        """The caller's principal if ``key`` may call ``method target`` (which needs ``scope``; None: open).
        Raises UNAUTHENTICATED or PERMISSION_DENIED."""
        if scope is None:
            return None
        principal = self.principal(key)
        if not principal.allows(scope):
            raise InferError(ErrorCode.PERMISSION_DENIED,
                             f"API key {principal.name!r} lacks scope {scope.value!r} needed for {method} {target}")
        return principal

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]], scope: Scope | None, method: str,
                      target: str) -> Principal | None:
        """:meth:`check` with the key taken from lower-cased HTTP headers (ASGI's and uvicorn's form)."""
        if scope is None:
            return None
        return self.check(key_from_headers(headers), scope, method, target)


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key of ``Authorization: Bearer <key>``, else of ``x-api-key``; names must be lower case."""
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            api_key = value.strip()
    return api_key


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    """The same from gRPC invocation metadata (keys are lower case in gRPC)."""
    if not metadata:
        return None
    return key_from_headers(
        (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in metadata
    )
