"""JSON logs, request ids and the access log of a real ``inferd serve --log-format json --access-log``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes import ADDER, FAILING, write_model
from server_process import ServerProcess

BODY = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                   {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("logging")
    write_model(root / "models", "adder", ADDER)
    write_model(root / "models", "failing", FAILING)
    process = ServerProcess(root / "models", root / "serve.log",
                            extra_args=["--log-format", "json", "--access-log", "--log-level", "info"])
    yield from process.serving(timeout=120)


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def access_entry(server: ServerProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10  # the listener thread writes the lines a moment later
    while time.monotonic() < deadline:
        found = [e for e in log_lines(server) if e["logger"] == "inferd.access" and e["request_id"] == request_id]
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}:\n{server.log()}")


def test_every_line_is_json_with_the_common_fields(json_server: ServerProcess) -> None:
    lines = log_lines(json_server)  # json.loads of every line: a line that is not JSON fails here
    assert any(e["message"] == "ready" and e["logger"] == "inferd.server.runner" for e in lines)
    for entry in lines:
        assert {"ts", "level", "logger", "message"} <= entry.keys()
        assert entry["ts"].endswith("Z")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v2/models/adder/infer", BODY),  # a native route
    ("GET", "/v2/health/ready", None),  # the native probes
    ("GET", "/v2/models/adder", None),  # FastAPI, through the ASGI wrapper
    ("GET", "/v2/models/nope", None),  # an error answer
])
def test_a_given_request_id_comes_back_and_is_logged(json_server: ServerProcess, method: str, path: str,
                                                     body: Any) -> None:
    request_id = f"test-{method}-{path}"
    # identity: httpx asks for gzip by default, and bytes_out counts the bytes on the wire (compressed)
    reply = httpx.request(method, json_server.url + path, json=body,
                          headers={"X-Request-ID": request_id, "Accept-Encoding": "identity"})
    assert reply.headers["x-request-id"] == request_id
    entry = access_entry(json_server, request_id)
    assert (entry["method"], entry["path"], entry["status"]) == (method, path, reply.status_code)
    assert entry["bytes_out"] == len(reply.content)
    assert entry["bytes_in"] == len(reply.request.content)
    assert entry["duration_ms"] >= 0
    assert entry["level"] == "info"


def test_a_missing_or_unusable_request_id_is_replaced(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.url) as client:
        generated = {client.post("/v2/models/adder/infer", json=BODY).headers["x-request-id"] for _ in range(3)}
        too_long = client.get("/v2/health/live", headers={"X-Request-ID": "x" * 129}).headers["x-request-id"]
    assert len(generated) == 3
    assert all(len(g) == 32 and int(g, 16) for g in generated)
    assert too_long != "x" * 129
    assert len(too_long) == 32
    for request_id in generated:
        access_entry(json_server, request_id)


def test_inference_with_expect_100_continue_has_request_ids_too(json_server: ServerProcess) -> None:
    """``Expect: 100-continue``: the interim answer, then the inference, with its id and access log entry."""
    body = json.dumps(BODY).encode()
    head = (f"POST /v2/models/adder/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nX-Request-ID: slow-path-1\r\n"
            "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", json_server.http_port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"HTTP/1.1 200 OK" in received
    assert b"x-request-id: slow-path-1\r\n" in received
    assert access_entry(json_server, "slow-path-1")["status"] == 200


def test_records_logged_while_a_request_runs_carry_its_id(json_server: ServerProcess) -> None:
    bad = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [-1]}]}
    for i in range(5):  # whether predict runs inline or on the executor's threads
        reply = httpx.post(json_server.url + "/v2/models/failing/infer", json=bad,
                           headers={"X-Request-ID": f"failing-{i}"})
        assert reply.status_code == 500
    access_entry(json_server, "failing-4")
    warnings = [e for e in log_lines(json_server) if e["message"].startswith("model failing raised ValueError")]
    assert len(warnings) == 5
    assert sorted(e.get("request_id") for e in warnings) == [f"failing-{i}" for i in range(5)]
