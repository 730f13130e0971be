"""The HTTP/1.1 layer over raw sockets: requests the native routes answer and those the ASGI app answers must
both be answered correctly, in order, on one connection (inferd.server.http.protocol)."""

from __future__ import annotations

import socket

import orjson
import pytest

from raw_http import get, post, read_responses

ADD = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                               {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [10, 20, 30]}]})


@pytest.fixture
def conn(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        yield sock


def test_pipelined_fast_and_slow_requests_are_answered_in_order(conn):
    conn.sendall(post("/v2/models/adder/infer", ADD) + get("/v2/models/adder") + get("/v2/health/ready")
                 + post("/v2/models/adder/versions/1/infer", ADD) + post("/v2/models/nope/infer", ADD)
                 + get("/v2/health/live"))
    answers = read_responses(conn, 6)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 404, 200]
    assert orjson.loads(answers[0][2])["outputs"][0]["data"] == [11, 22, 33]
    assert orjson.loads(answers[1][2])["name"] == "adder"
    assert answers[2][2] == b'{"ready":true}'
    assert orjson.loads(answers[3][2])["model_version"] == "1"
    assert "nope" in orjson.loads(answers[4][2])["error"]
    assert answers[5][2] == b'{"live":true}'


def test_keep_alive_serves_many_requests_on_one_connection(conn):
    for _ in range(50):
        conn.sendall(post("/v2/models/adder/infer", ADD))
        [(status, headers, body)] = read_responses(conn, 1)
        assert status == 200
        assert headers[b"content-type"] == b"application/json"
        assert orjson.loads(body)["outputs"][0]["data"] == [11, 22, 33]


def test_body_sent_in_pieces(conn):
    request = post("/v2/models/adder/infer", ADD)
    for start in range(0, len(request), 7):
        conn.sendall(request[start:start + 7])
    [(status, _, body)] = read_responses(conn, 1)
    assert status == 200, body


def test_query_string_is_ignored_by_the_route(conn):
    conn.sendall(post("/v2/models/adder/infer?trace=1", ADD))
    [(status, _, _)] = read_responses(conn, 1)
    assert status == 200


def test_http_1_0_gets_its_answer_and_the_connection_closes(conn):
    conn.sendall(post("/v2/models/adder/infer", ADD, version=b"HTTP/1.0"))
    [(status, headers, _)] = read_responses(conn, 1)
    assert status == 200
    assert headers[b"connection"] == b"close"
    assert conn.recv(10) == b""


def test_expect_100_continue_gets_its_interim_answer(conn):
    head = (b"POST /v2/models/adder/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n"
            b"expect: 100-continue\r\n\r\n" % len(ADD))
    conn.sendall(head)
    assert conn.recv(1024).startswith(b"HTTP/1.1 100")
    conn.sendall(ADD)
    [(status, _, body)] = read_responses(conn, 1)
    assert status == 200, body


def test_percent_encoded_model_name_goes_through_the_app(conn):
    conn.sendall(post("/v2/models/add%65r/infer", ADD))
    [(status, _, body)] = read_responses(conn, 1)
    assert status == 200, body


def test_oversized_body_is_413_and_the_connection_still_serves(conn):
    big = b"x" * (4 * 1024 * 1024 + 10)
    conn.sendall(post("/v2/models/adder/infer", big) + post("/v2/models/adder/infer", ADD))
    (status, _, body), (after, _, _) = read_responses(conn, 2)
    assert status == 413
    assert "over the limit" in orjson.loads(body)["error"]
    assert after == 200


def test_malformed_http_gets_400(conn):
    conn.sendall(b"POST /v2/models/adder/infer HTTP/1.1\r\ncontent-length: nope\r\n\r\n")
    [(status, _, _)] = read_responses(conn, 1)
    assert status == 400


def test_client_that_leaves_mid_request_does_not_hurt_the_server(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(post("/v2/models/adder/infer", ADD)[:-5])
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(post("/v2/models/adder/infer", ADD))
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 200


def test_unicode_digits_in_a_version_are_a_client_error(conn):
    """Found by the schema fuzzer: "²".isdigit() is true, int("²") raises, and that was a 500."""
    conn.sendall(get("/v2/models/adder/versions/%C2%B2"))
    [(status, _, body)] = read_responses(conn, 1)
    assert status == 400, body
    assert "positive integer" in orjson.loads(body)["error"]
