"""Request ids: the id rules (the HTTP server applies them to every request: tests/unit/server/test_http_server.py)."""

from __future__ import annotations

import pytest

from inferd.observability.request_context import RequestObserver


@pytest.mark.parametrize("given", [b"abc-123", b"a" * 128, b"req 42 / retry", b"~!@#$%^&*()"])
def test_a_usable_request_id_is_kept(given: bytes) -> None:
    assert RequestObserver().request_id(given) == given.decode()


@pytest.mark.parametrize("given", [b"", b"a" * 129, b"tab\there", b"new\nline", "caf\u00e9".encode(), b"\x00"])
def test_an_unusable_request_id_is_replaced(given: bytes) -> None:
    replaced = RequestObserver().request_id(given)
    assert replaced != given.decode(errors="replace")
    assert len(replaced) == 32
    assert int(replaced, 16) >= 0


def test_new_ids_are_unique_within_and_across_observers() -> None:
    first, second = RequestObserver(), RequestObserver()
    ids = {first.request_id() for _ in range(1000)} | {second.request_id() for _ in range(1000)}
    assert len(ids) == 2000


def test_from_headers_finds_the_header_among_others() -> None:
    observer = RequestObserver()
    assert observer.from_headers([(b"host", b"x"), (b"x-request-id", b"mine")]) == "mine"
    assert len(observer.from_headers([(b"host", b"x")])) == 32
