"""What inferd's HTTP protocol (inferd.server.http.protocol) relies on httptools for. If an httptools release
changes any of it, these fail before a server does; pyproject's httptools range is the one these pass on."""

from __future__ import annotations

from typing import Any

import httptools
import pytest


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.events.append("begin")

    def on_url(self, url: bytes) -> None:
        self.events.append(("url", url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.events.append(("header", name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.events.append(("head", parser.get_method(), parser.get_http_version(), parser.should_keep_alive(),
                            parser.should_upgrade()))

    def on_body(self, body: bytes) -> None:
        self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append("complete")


def test_pipelined_requests_in_one_feed_come_one_after_the_other():
    recorder = Recorder()
    recorder.parser.feed_data(b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                              b"GET /b HTTP/1.0\r\n\r\n")
    assert recorder.events == [
        "begin", ("url", b"/a?x=1"), ("header", b"Host", b"h"), ("header", b"Content-Length", b"3"),
        ("head", b"POST", "1.1", True, False), ("body", b"abc"), "complete",
        "begin", ("url", b"/b"), ("head", b"GET", "1.0", False, False), "complete",
    ]


def test_a_request_split_anywhere_gives_the_same_events():
    request = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    whole = Recorder()
    whole.parser.feed_data(request)
    pieces = Recorder()
    for index in range(len(request)):
        pieces.parser.feed_data(request[index:index + 1])
    joined = [e for e in pieces.events if not (isinstance(e, tuple) and e[0] in ("url", "header", "body"))]
    assert joined == [e for e in whole.events if not (isinstance(e, tuple) and e[0] in ("url", "header", "body"))]
    assert b"".join(e[1] for e in pieces.events if isinstance(e, tuple) and e[0] == "url") == b"/a"
    assert b"".join(e[1] for e in pieces.events if isinstance(e, tuple) and e[0] == "body") == b"hello"


def test_a_chunked_body_arrives_decoded():
    recorder = Recorder()
    recorder.parser.feed_data(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert [e for e in recorder.events if isinstance(e, tuple) and e[0] == "body"] == [("body", b"abc"),
                                                                                      ("body", b"de")]
    assert recorder.events[-1] == "complete"


def test_http_1_0_keeps_alive_only_when_asked():
    recorder = Recorder()
    recorder.parser.feed_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert ("head", b"GET", "1.0", True, False) in recorder.events


def test_an_upgrade_stops_the_parser_after_the_request_with_the_offset_of_what_follows():
    recorder = Recorder()
    first = b"GET /d HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    with pytest.raises(httptools.HttpParserUpgrade) as caught:
        recorder.parser.feed_data(first + b"GET /e HTTP/1.1\r\n\r\n")
    assert caught.value.args[0] == len(first)
    assert recorder.events[-1] == "complete"
    assert ("head", b"GET", "1.1", True, True) in recorder.events


def test_upgrade_without_connection_upgrade_is_a_plain_request():
    recorder = Recorder()
    recorder.parser.feed_data(b"POST /d HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nab")
    assert ("head", b"POST", "1.1", True, False) in recorder.events


def test_a_raising_callback_surfaces_as_a_parser_error():
    class StopError(Exception):
        pass

    class Raising(Recorder):
        def on_header(self, name: bytes, value: bytes) -> None:
            raise StopError

    with pytest.raises(httptools.HttpParserError):
        Raising().parser.feed_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
    b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
])
def test_malformed_requests_are_parser_errors(request_bytes):
    with pytest.raises(httptools.HttpParserError):
        Recorder().parser.feed_data(request_bytes)
