"""Each request limit against a real ``inferd serve`` with small limits: body size, tensor element count,
batch size, header size, concurrent connections and the asynchronous payload size."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fakes import ADDER, write_model
from server_process import ServerProcess

LIMITS = {"INFERD_MAX_TENSOR_ELEMENTS": "1000", "INFERD_MAX_BATCH_SIZE": "100", "INFERD_MAX_HEADER_BYTES": "4096",
          "INFERD_ASYNC_MAX_BODY_BYTES": "4096"}
MAX_BODY = 65536


def _add(rows: int) -> bytes:
    data = list(range(rows * 3))
    return orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [rows, 3], "data": data},
                                    {"name": "b", "datatype": "FP32", "shape": [rows, 3], "data": data}]})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits") / "models"
    write_model(root, "adder", ADDER)
    return root


def _serve(repo: Path, name: str, env: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(repo, repo.parent / f"{name}.log", extra_args=["--max-body-bytes", str(MAX_BODY)],
                            env=env)
    yield from process.serving()


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    yield from _serve(repo, "limits", LIMITS)


def test_body_size_is_refused_alike_on_every_route_declared_or_streamed(server):
    """One body reader for every REST route: the same status and message, whether Content-Length declares the
    size (refused before the body is read) or a chunked body grows past the limit."""
    big = b'{"inputs": [], "pad": "' + b"x" * MAX_BODY + b'"}'
    expected = f"request body is over the limit of {MAX_BODY} bytes (max_body_bytes)"
    paths = ("/v2/models/adder/infer", "/v2/models/add%65r/infer", "/v1/models/adder:predict", "/invocations",
             "/v2/repository/index")
    for path in paths:
        declared = httpx.post(server.url + path, content=big, headers={"content-type": "application/json"})
        streamed = httpx.post(server.url + path, content=iter([big[:100], big[100:]]),
                              headers={"content-type": "application/json"})
        for answer in (declared, streamed):
            assert answer.status_code == 413, path
            assert answer.json() == {"error": expected}, path


def test_tensor_element_count(server):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=_add(334))
    assert answer.status_code == 400
    assert answer.json()["error"] == ("input 'a': shape [334, 3] has 1002 elements, over the limit of 1000 per "
                                      "tensor (max_tensor_elements)")
    assert httpx.post(server.url + "/v2/models/adder/infer", content=_add(33)).status_code == 200


def test_tensor_element_count_over_grpc_is_checked_before_the_data(server):
    """A binary input that only claims a huge shape: refused by its shape, whatever the bytes."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = []
        for name in ("a", "b"):
            item = grpcclient.InferInput(name, [400, 3], "FP32")
            item.set_data_from_numpy(np.zeros((400, 3), dtype=np.float32))
            inputs.append(item)
        with pytest.raises(InferenceServerException, match="1200 elements, over the limit of 1000") as caught:
            client.infer("adder", inputs)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_batch_size(server):
    answer = httpx.post(server.url + "/v2/models/adder/infer", content=_add(101))  # 303 elements: under that limit
    assert answer.status_code == 400
    assert answer.json()["error"] == "a batch of 101 exceeds the model's max_batch_size of 100"


def test_header_size(server):
    ok = httpx.get(server.url + "/v2/health/live", headers={"x-pad": "p" * 3000})
    assert ok.status_code == 200
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 5000 + b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in answer
    assert b"over the limit of 4096 bytes (max_header_bytes)" in answer


def test_header_line_that_never_ends(server):
    """httptools keeps a header to itself until its line ends: the server answers 431 all the same, and
    drops what the client still sends (a lingering close) instead of holding it or resetting the answer."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: ")
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # it may close before we stop
            for _ in range(100):
                sock.sendall(b"p" * 65536)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 400_000)
        time.sleep(0.2)  # the answer arrives while the server still drops what we sent: no reset destroys it
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_long_url(server):
    answer = httpx.get(server.url + "/v2/models/" + "m" * 5000)
    assert answer.status_code == 431


def test_async_payload_size(server):
    big = b'{"inputs": [], "pad": "' + b"x" * 5000 + b'"}'
    answer = httpx.post(server.url + "/v2/models/adder/infer-async", content=big)
    assert answer.status_code == 413
    assert answer.json()["error"] == "request body is over the limit of 4096 bytes (async_max_body_bytes)"


def _read_all(sock: socket.socket) -> bytes:
    found = b""
    while chunk := sock.recv(65536):
        found += chunk
    return found


def _request(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = b""
    while b'{"live":true}' not in answer and b'"error"' not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def test_concurrent_connections(repo: Path):
    for server in _serve(repo, "connections", {"INFERD_MAX_CONNECTIONS": "4"}):
        held = [socket.create_connection(("127.0.0.1", server.http_port), timeout=10) for _ in range(4)]
        try:
            for sock in held:
                assert _request(sock).startswith(b"HTTP/1.1 200 ")
            with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as extra:
                answer = _request(extra)
                assert answer.startswith(b"HTTP/1.1 503 "), answer
                assert b"too many open connections (max_connections is 4)" in answer
                assert b"connection: close" in answer
                assert b"retry-after: 1" in answer
                assert extra.recv(10) == b""  # closed
            for sock in held:  # the connections within the limit keep working
                assert _request(sock).startswith(b"HTTP/1.1 200 ")
            held.pop().close()
            for _ in range(100):  # once the server has seen that one close, a new connection is served
                with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as again:
                    answer = _request(again)
                if answer.startswith(b"HTTP/1.1 200 "):
                    break
            assert answer.startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in held:
                sock.close()
