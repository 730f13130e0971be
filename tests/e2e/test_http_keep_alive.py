"""HTTP connection timeouts. Idle keep-alive connections are closed after ``keep_alive_timeout_s``, measured from
the last answer (or from the connection, if it never sent a request): a connection in use stays open, and a
request that takes longer than the timeout still gets its answer. A request whose line and headers are not all
there ``header_timeout_s`` after its first byte gets 408 and its connection closes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from fakes import ADDER, write_model
from raw_http import post, read_responses
from server_process import ServerProcess

SLOW = """
import time

class Model:
    inputs = [{"name": "hold_ms", "datatype": "INT64", "shape": [1]}]
    outputs = [{"name": "hold_ms", "datatype": "INT64", "shape": [1]}]

    def predict(self, inputs):
        time.sleep(int(inputs["hold_ms"][0]) / 1000)
        return {"hold_ms": inputs["hold_ms"].copy()}
"""

ADD = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                               {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [10, 20, 30]}]})


def _hold(ms: int) -> bytes:
    return orjson.dumps({"inputs": [{"name": "hold_ms", "datatype": "INT64", "shape": [1], "data": [ms]}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("keep_alive") / "models"
    write_model(root, "adder", ADDER)
    write_model(root, "slow", SLOW)
    process = ServerProcess(root, root.parent / "server.log", env={"INFERD_KEEP_ALIVE_TIMEOUT_S": "1",
                                                                              "INFERD_HEADER_TIMEOUT_S": "1",
                                                                              "INFERD_BODY_TIMEOUT_S": "1"})
    yield from process.serving()


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=10)


def test_idle_connection_is_closed_after_the_timeout(server):
    with _connect(server) as sock:
        sock.sendall(post("/v2/models/adder/infer", ADD))
        [(status, _, _)] = read_responses(sock, 1)
        answered = time.monotonic()
        assert status == 200
        sock.settimeout(4)  # the default timeout (5 s) would not close it in time
        assert sock.recv(10) == b""
        assert time.monotonic() - answered >= 0.9


def test_connection_in_use_stays_open_past_the_timeout(server):
    with _connect(server) as sock:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # a request every 0.3 s: never idle for the whole second
            sock.sendall(post("/v2/models/adder/infer", ADD))
            [(status, _, _)] = read_responses(sock, 1)
            assert status == 200
            time.sleep(0.3)


def test_request_longer_than_the_timeout_gets_its_answer(server):
    with _connect(server) as sock:
        sock.sendall(post("/v2/models/slow/infer", _hold(10)))  # a first call: learned, and a warm connection
        assert read_responses(sock, 1)[0][0] == 200
        sock.sendall(post("/v2/models/slow/infer", _hold(2500)))
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200
        assert orjson.loads(body)["outputs"][0]["data"] == [2500]


def test_connection_that_never_sends_a_request_is_closed(server):
    with _connect(server) as sock:
        opened = time.monotonic()
        sock.settimeout(4)
        assert sock.recv(10) == b""
        assert time.monotonic() - opened >= 0.9


def test_headers_that_do_not_arrive_in_time_get_408(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /v2/models/adder/infer HTTP/1.1\r\nhost: x\r\n")  # and the rest never comes
        sock.settimeout(4)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer
        _, _, body = answer.partition(b"\r\n\r\n")
        assert orjson.loads(body) == {
            "error": "the request line and headers did not arrive within 1 s (header_timeout_s)"}


def test_headers_sent_in_pieces_within_the_timeout_are_answered(server):
    request = post("/v2/models/adder/infer", ADD)
    with _connect(server) as sock:
        for start in range(0, 60, 20):  # the head in three pieces over 0.6 s
            sock.sendall(request[start:start + 20])
            time.sleep(0.3)
        sock.sendall(request[60:])
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200
        assert orjson.loads(body)["outputs"][0]["data"] == [11, 22, 33]


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize("path", ["/v2/models/adder/infer", "/v2/repository/index"])  # a native route, and FastAPI
def test_a_body_that_stops_coming_gets_408(server, path):
    request = post(path, ADD)
    with _connect(server) as sock:
        sock.sendall(request[:-10])  # the headers and most of the body; the last bytes never come
        started = time.monotonic()
        answer = _read_until_closed(sock)
        assert time.monotonic() - started >= 0.9
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer
        _, _, body = answer.partition(b"\r\n\r\n")
        assert orjson.loads(body) == {"error": "no part of the request body arrived for 1 s (body_timeout_s)"}
    with _connect(server) as sock:  # and the server goes on serving
        sock.sendall(post("/v2/models/adder/infer", ADD))
        assert read_responses(sock, 1)[0][0] == 200


def test_a_body_timeout_is_one_info_line_in_the_log_not_an_error_with_a_traceback(server):
    """The FastAPI routes read the body through Starlette, which raises ClientDisconnect when the body stops
    coming: that is the client's doing, logged at INFO in one line."""
    with _connect(server) as sock:
        sock.sendall(post("/v2/repository/index", ADD)[:-10])
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    deadline = time.monotonic() + 10
    while "ClientDisconnect" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    time.sleep(0.2)  # anything else it would log about it comes at once
    log = server.log()
    assert "Traceback" not in log
    assert "ERROR" not in log
    lines = [line for line in log.splitlines() if "ClientDisconnect" in line]  # (one per stalled body so far)
    assert lines
    for line in lines:
        assert "INFO" in line
        assert "the client went away before the body of POST /v2/repository/index was read" in line


def test_a_slow_but_steady_body_is_answered(server):
    request = post("/v2/models/adder/infer", ADD)
    head_end = request.index(b"\r\n\r\n") + 4
    with _connect(server) as sock:
        sock.sendall(request[:head_end])
        for start in range(head_end, len(request), 10):  # the body ten bytes at a time over more than 1 s
            time.sleep(0.25)
            sock.sendall(request[start:start + 10])
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200
        assert orjson.loads(body)["outputs"][0]["data"] == [11, 22, 33]
