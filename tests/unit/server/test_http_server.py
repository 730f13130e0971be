"""inferd's HTTP/1.1 server in process, over real loopback sockets: a native route and a tiny ASGI app behind one
listener. What the REST API relies on the front for: framing (chunked, HEAD, HTTP/1.0), limits checked before a
body is read, ``Expect: 100-continue``, ``Upgrade`` ignored, pipelining with read-ahead bounded, request ids and the
access log for every route, failures of the app answered, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from inferd.observability.request_context import REQUEST_ID, RequestObserver
from inferd.server.http import HTTPLimits, HTTPServer, PortInUseError
from inferd.server.http.protocol import Front
from inferd.server.http.routes import Exchange, NativeRoute, Parts
from inferd.server.http.wire import Headers, error_parts

LIMIT = 1000


class EchoRoute:
    """POST /echo: answers with the body it read and the request id it ran under."""

    max_body_bytes = LIMIT

    def too_large(self, size: int) -> Parts:
        return error_parts(413, f"over {LIMIT}")

    def refusal(self, headers: Headers) -> Parts | None:
        return error_parts(401, "no") if (b"x-deny", b"1") in headers else None

    def handle(self, exchange: Exchange, body: bytes) -> None:
        content = orjson.dumps({"body": body.decode(), "id": REQUEST_ID.get()})
        exchange.respond(200, b"content-length: %d\r\n" % len(content), content)


class LaterRoute(EchoRoute):
    """POST /later: answers after a short wait, from a timer (as the scheduler answers a batched request)."""

    def handle(self, exchange: Exchange, body: bytes) -> None:
        asyncio.get_running_loop().call_later(0.2, super().handle, exchange, body)


class Router:
    def __init__(self) -> None:
        self.routes: dict[bytes, NativeRoute] = {b"/echo": EchoRoute(), b"/later": LaterRoute()}

    def find(self, method: bytes, path: bytes) -> NativeRoute | None:
        return self.routes.get(path) if method == b"POST" else None


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("the app broke")
    if path == "/read":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        content = orjson.dumps({"body": body.decode(), "path": path, "raw": scope["raw_path"].decode(),
                                "query": scope["query_string"].decode(), "id": REQUEST_ID.get()})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": content})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    if path == "/late-boom":
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("broke mid-response")
    for piece in (b"one", b"two"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class Served:
    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def run(body: Callable[[Served], Awaitable[Any]], limits: HTTPLimits | None = None,
        observer: RequestObserver | None = None) -> Any:
    async def main() -> Any:
        front = Front(Router(), lambda: app, limits or HTTPLimits(), observer or RequestObserver())
        server = HTTPServer(front, "127.0.0.1", 0)
        await server.start()
        served = Served(server)
        try:
            return await asyncio.wait_for(body(served), 10)
        finally:
            await served.close()
            await server.stop(grace_s=2)

    return asyncio.run(main())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response: Content-Length, chunked, or (no length) until the connection closes."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
    if b"content-length" in headers:
        return status, headers, await reader.readexactly(int(headers[b"content-length"]))
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += data[:-2]
    return status, headers, await reader.read()


def post(path: str, body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return (b"POST %s %s\r\nhost: x\r\ncontent-length: %d\r\n" % (path.encode(), version, len(body))
            + extra + b"\r\n" + body)


def get(path: str, extra: bytes = b"", method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return method + b" " + path.encode() + b" " + version + b"\r\nhost: x\r\n" + extra + b"\r\n"


def test_native_and_asgi_requests_pipelined_are_answered_in_order_with_ids():
    async def body(served: Served) -> list[Any]:
        reader, writer = await served.open()
        writer.write(post("/later", b"first") + get("/stream") + post("/echo", b"third", b"x-request-id: mine\r\n")
                     + post("/read?q=1", b"fourth"))
        return [await read_response(reader) for _ in range(4)]

    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3), (s4, h4, b4) = run(body)
    assert (s1, s2, s3, s4) == (200, 200, 200, 200)
    assert orjson.loads(b1)["body"] == "first"
    assert orjson.loads(b1)["id"] == h1[b"x-request-id"].decode()  # the route ran under its request's id
    assert h2[b"transfer-encoding"] == b"chunked"
    assert b2 == b"onetwo"
    assert h2[b"x-app"] == b"1"
    assert len(h2[b"x-request-id"]) == 32
    assert h3[b"x-request-id"] == b"mine"
    assert orjson.loads(b3) == {"body": "third", "id": "mine"}
    assert orjson.loads(b4) == {"body": "fourth", "path": "/read", "raw": "/read", "query": "q=1",
                                "id": h4[b"x-request-id"].decode()}


def test_a_percent_encoded_path_reaches_the_app_decoded():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(post("/re%61d", b""))
        return await read_response(reader)

    status, _, content = run(body)
    assert status == 200
    assert orjson.loads(content)["path"] == "/read"
    assert orjson.loads(content)["raw"] == "/re%61d"


def test_http_1_0_streaming_response_ends_with_the_connection():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(get("/stream", version=b"HTTP/1.0"))
        return await read_response(reader)

    status, headers, content = run(body)
    assert status == 200
    assert content == b"onetwo"
    assert b"transfer-encoding" not in headers
    assert headers[b"connection"] == b"close"


def test_head_gets_the_headers_and_no_body():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(get("/read", method=b"HEAD") + post("/echo", b"after"))
        head = await reader.readuntil(b"\r\n\r\n")
        return head, await read_response(reader)

    head, (status, _, content) = run(body)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: " in head
    assert status == 200  # the next response follows the head at once: no body was sent for HEAD
    assert orjson.loads(content)["body"] == "after"


def test_a_body_over_the_limit_is_refused_before_it_is_sent():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (LIMIT + 1))
        refused = await read_response(reader)  # answered while the body has not come
        writer.write(b"x" * (LIMIT + 1) + post("/echo", b"next"))  # the body is dropped; the connection serves on
        return refused, await read_response(reader)

    (status, _, content), (after, _, next_body) = run(body)
    assert status == 413
    assert orjson.loads(content) == {"error": f"over {LIMIT}"}
    assert after == 200
    assert orjson.loads(next_body)["body"] == "next"


def test_a_chunked_body_over_the_limit_is_refused_as_it_grows():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        piece = b"y" * 600
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(piece), piece) * 2)
        refused = await read_response(reader)
        writer.write(b"0\r\n\r\n" + post("/echo", b"next"))
        return refused, await read_response(reader)

    (status, _, _), (after, _, _) = run(body)
    assert (status, after) == (413, 200)


def test_expect_100_continue_native_route():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
        interim = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ok")
        return interim, await read_response(reader)

    interim, (status, _, content) = run(body)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status == 200
    assert orjson.loads(content)["body"] == "ok"


def test_expect_100_continue_over_the_limit_gets_413_and_no_interim_answer():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nexpect: 100-continue\r\n\r\n"
                     % (LIMIT * 10))
        return await read_response(reader), await reader.read()

    (status, headers, _), rest = run(body)
    assert status == 413
    assert headers[b"connection"] == b"close"
    assert rest == b""  # no 100 Continue, and the connection closes


def test_expect_100_continue_asgi_route_when_the_app_reads():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n")
        interim = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"abc")
        return interim, await read_response(reader)

    interim, (status, _, content) = run(body)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert (status, orjson.loads(content)["body"]) == (200, "abc")


def test_a_refusal_from_the_headers_drops_the_body_and_serves_on():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(post("/echo", b"secret", b"x-deny: 1\r\n") + post("/echo", b"fine"))
        return [await read_response(reader) for _ in range(2)]

    (first, _, _), (second, _, content) = run(body)
    assert (first, second) == (401, 200)
    assert orjson.loads(content)["body"] == "fine"


@pytest.mark.parametrize("upgrade", [b"connection: upgrade\r\nupgrade: websocket\r\n",
                                     b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AA\r\n"])
def test_an_upgrade_is_ignored_and_the_connection_goes_on_as_http_1_1(upgrade):
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(post("/echo", b"up", upgrade) + post("/read", b"then"))
        return [await read_response(reader) for _ in range(2)]

    (first, _, content), (second, _, then) = run(body)
    assert (first, second) == (200, 200)  # never 101
    assert orjson.loads(content)["body"] == "up"
    assert orjson.loads(then)["body"] == "then"


def test_an_app_that_fails_before_answering_gets_500_and_the_connection_serves_on():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(get("/boom") + post("/echo", b"after"))
        return [await read_response(reader) for _ in range(2)]

    (status, _, content), (after, _, _) = run(body)
    assert status == 500
    assert "the app broke" in orjson.loads(content)["error"]
    assert after == 200


def test_an_app_that_fails_mid_response_has_its_connection_closed():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(get("/late-boom"))
        return await reader.read()

    answer = run(body)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert not answer.endswith(b"0\r\n\r\n")  # the chunked body never ended: the client sees it cut short


def test_malformed_http_gets_400_and_the_connection_closes():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"POST /echo HTTP/1.1\r\nx-request-id: mine-1\r\ncontent-length: nope\r\n\r\n")
        return await reader.read()

    answer = run(body)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer
    assert b"x-request-id: mine-1\r\n" in answer  # a refusal is traceable as every answer is


def test_a_refusal_before_any_header_gets_a_new_request_id():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"NOT-HTTP\r\n\r\n")
        return await reader.read()

    answer = run(body)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert re.search(rb"\r\nx-request-id: [0-9a-f]+\r\n", answer) is not None


def test_pipelining_past_the_read_ahead_limit_pauses_reading_and_answers_all():
    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(b"".join(post("/later" if i == 0 else "/echo", b"%d" % i) for i in range(40)))
        return [await read_response(reader) for _ in range(40)]

    answers = run(body, HTTPLimits(max_pipelined=4))
    assert [orjson.loads(content)["body"] for _, _, content in answers] == [str(i) for i in range(40)]


def test_connections_over_the_limit_get_503_with_retry_after():
    async def body(served: Served) -> Any:
        kept = [await served.open() for _ in range(2)]
        reader, writer = await served.open()
        writer.write(post("/echo", b"x"))
        answer = await reader.read()
        reader, writer = kept[0]
        writer.write(post("/echo", b"y"))
        return answer, await read_response(reader)

    answer, (status, _, _) = run(body, HTTPLimits(max_connections=2))
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in answer
    assert status == 200


def test_the_access_log_has_one_record_per_request_with_the_body_bytes_received(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="inferd.access")

    async def body(served: Served) -> Any:
        reader, writer = await served.open()
        writer.write(post("/echo", b"12345", b"x-request-id: r-1\r\n") + b"POST /read HTTP/1.1\r\nhost: x\r\n"
                     b"transfer-encoding: chunked\r\nx-request-id: r-2\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        return [await read_response(reader) for _ in range(2)]

    run(body, observer=RequestObserver(access_log=True))
    records = {r.request_id: r for r in caplog.records if r.name == "inferd.access"}
    assert set(records) == {"r-1", "r-2"}
    assert (records["r-1"].method, records["r-1"].path, records["r-1"].status) == ("POST", "/echo", 200)
    assert records["r-1"].bytes_in == 5
    assert records["r-2"].bytes_in == 3  # chunked: what came, not a Content-Length
    assert records["r-1"].bytes_out == len(orjson.dumps({"body": "12345", "id": "r-1"}))


def test_stopping_answers_the_request_in_flight_closes_idle_connections_and_refuses_new_ones():
    async def main() -> Any:
        front = Front(Router(), lambda: app)
        server = HTTPServer(front, "127.0.0.1", 0)
        await server.start()
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        busy_writer.write(post("/later", b"in flight"))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(grace_s=5))
        idle_closed = await asyncio.wait_for(idle_reader.read(), 2)
        answer = await read_response(busy_reader)
        await stopping
        busy_writer.close()
        idle_writer.close()
        try:
            _, late = await asyncio.open_connection("127.0.0.1", server.port)
            late.close()
            refused = False
        except OSError:
            refused = True
        return idle_closed, answer, refused

    idle_closed, (status, headers, content), refused = asyncio.run(main())
    assert idle_closed == b""
    assert status == 200
    assert headers[b"connection"] == b"close"
    assert orjson.loads(content)["body"] == "in flight"
    assert refused


def test_a_port_in_use_is_one_clear_error():
    async def main() -> str:
        first = HTTPServer(Front(Router(), lambda: app), "127.0.0.1", 0)
        await first.start()
        try:
            with pytest.raises(PortInUseError) as caught:
                await HTTPServer(Front(Router(), lambda: app), "127.0.0.1", first.port).start()
            return str(caught.value)
        finally:
            await first.stop(0)

    message = asyncio.run(main())
    assert "port" in message
    assert "is in use; choose another with --http-port" in message
