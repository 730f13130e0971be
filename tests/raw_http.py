"""HTTP/1.1 requests written and responses read by hand over a raw socket, for tests of what clients like
httpx never send (pipelining, split bodies, odd headers) — and the adder model's inputs for tritonclient.grpc."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np


def post(path: str, body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """A POST of a JSON body; ``extra`` is more header lines, each ending in CRLF."""
    return (b"POST " + path.encode() + b" " + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n" % len(body) + extra + b"\r\n" + body)


def get(path: str) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n\r\n"


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Parse ``count`` responses with content-length bodies: (status, headers by lower-case name, body)."""
    buffer = b""
    found: list[tuple[int, dict[bytes, bytes], bytes]] = []
    while len(found) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(found)} responses"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
        length = int(headers.get(b"content-length", b"0"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        found.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return found


def adder_grpc_inputs() -> list[Any]:
    """tritonclient.grpc inputs a=[1, 2, 3], b=[10, 20, 30] for the ADDER fake model (sum [11, 22, 33])."""
    import tritonclient.grpc as grpcclient

    found = []
    for name, values in (("a", [1, 2, 3]), ("b", [10, 20, 30])):
        item = grpcclient.InferInput(name, [1, 3], "FP32")
        item.set_data_from_numpy(np.array([values], dtype=np.float32))
        found.append(item)
    return found
