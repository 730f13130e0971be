"""HTTP/1.1 response framing: status lines, header lines, chunked encoding. Bytes only, no I/O."""

from __future__ import annotations

from http import HTTPStatus

import orjson

Headers = list[tuple[bytes, bytes]]

STATUS_LINE: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii")) for status in HTTPStatus
}
"""The status line of every status Python knows; :func:`status_line` makes the others."""

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONNECTION_CLOSE = b"connection: close\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    line = STATUS_LINE.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def header_lines(headers: Headers) -> bytes:
    """``name: value`` lines, each ending in CRLF. A name or value holding CR or LF (header injection) raises
    ValueError."""
    lines = []
    for name, value in headers:
        if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` must not be empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_parts(status: int, message: str, retry_after_s: int | None = None,
                extra: tuple[bytes, bytes] | None = None) -> tuple[int, Headers, bytes]:
    """Status, headers and body of inferd's HTTP error form, ``{"error": message}`` (the V2 protocol's, which
    tritonclient and perf_analyzer read); ``extra`` is one more header."""
    content = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    if retry_after_s is not None:
        headers.append((b"retry-after", b"%d" % retry_after_s))
    if extra is not None:
        headers.append(extra)
    return status, headers, content
