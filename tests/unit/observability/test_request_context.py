"""Request ids and the access log: the id rules, and the ASGI wrapper over a real (tiny) ASGI app."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from inferd.observability.request_context import REQUEST_ID, RequestObserver


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


async def _call(observer: RequestObserver, headers: list[tuple[bytes, bytes]],
                status: int = 200) -> tuple[list[dict[str, Any]], list[str | None]]:
    seen: list[str | None] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(REQUEST_ID.get())
        logging.getLogger("inferd.test").info("inside the request")
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v2", "headers": headers}
    await observer.wrap(app)(scope, receive, send)
    return sent, seen


def test_the_asgi_wrapper_returns_and_exposes_the_id() -> None:
    observer = RequestObserver()
    sent, seen = asyncio.run(_call(observer, [(b"x-request-id", b"given-1")]))
    assert (b"x-request-id", b"given-1") in sent[0]["headers"]
    assert (b"content-type", b"text/plain") in sent[0]["headers"]
    assert seen == ["given-1"]
    assert REQUEST_ID.get() is None, "the id does not outlive its request"
    sent, seen = asyncio.run(_call(observer, []))
    generated = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert seen == [generated]
    assert len(generated) == 32


def test_the_access_log_is_off_by_default_and_one_record_per_request_when_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferd.access")
    asyncio.run(_call(RequestObserver(), []))
    assert not [r for r in caplog.records if r.name == "inferd.access"]
    asyncio.run(_call(RequestObserver(access_log=True), [(b"x-request-id", b"r-9"), (b"content-length", b"12")],
                      status=404))
    [record] = [r for r in caplog.records if r.name == "inferd.access"]
    fields = {k: getattr(record, k) for k in ("method", "path", "status", "request_id", "bytes_in", "bytes_out")}
    assert fields == {"method": "GET", "path": "/v2", "status": 404, "request_id": "r-9", "bytes_in": 12,
                      "bytes_out": 5}
    assert record.duration_ms >= 0
    assert record.getMessage().startswith("GET /v2 404 ")
