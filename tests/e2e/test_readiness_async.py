"""A second server on a state folder another server holds: its async routes answer 503, and readiness says so.
By default it stays ready (readiness is about the models: its real-time routes work) and the ready body names
what is off and why; with ``require_async`` it is not ready, for servers that exist to drain the async queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fakes import ADDER, write_model
from server_process import ServerProcess

BODY = {"inputs": [{"name": n, "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]} for n in ("a", "b")]}


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, Path, ServerProcess]]:
    repo = tmp_path / "models"
    write_model(repo, "adder", ADDER)
    state = tmp_path / "state"
    first = ServerProcess(repo, tmp_path / "first.log", extra_args=["--state-dir", str(state)])
    yield from ((repo, state, server) for server in first.serving())


def test_the_first_server_says_nothing_more_than_ready(holder):
    _, _, first = holder
    assert httpx.get(first.url + "/v2/health/ready").json() == {"ready": True}


def test_a_second_server_stays_ready_and_says_async_is_off_and_why(holder, tmp_path):
    repo, state, first = holder
    second = ServerProcess(repo, tmp_path / "second.log", extra_args=["--state-dir", str(state)])
    for server in second.serving():
        with httpx.Client(base_url=server.url, timeout=10) as http:
            ready = http.get("/v2/health/ready")
            assert ready.status_code == 200
            body = ready.json()
            assert body["ready"] is True
            reason = body["unavailable"]["async"]
            assert f"another inferd server (pid {first.process.pid}) uses the state folder" in reason
            refused = http.post("/v2/models/adder/infer-async", json=BODY)
            assert refused.status_code == 503
            assert refused.json()["error"] == reason
            assert http.post("/v2/models/adder/infer", json=BODY).status_code == 200
        assert "ready (asynchronous inference is off)" in server.log()


def test_with_require_async_the_second_server_is_not_ready(holder, tmp_path):
    repo, state, _ = holder
    second = ServerProcess(repo, tmp_path / "strict.log", extra_args=["--state-dir", str(state)],
                           env={"INFERD_REQUIRE_ASYNC": "true"}).start(wait_ready=False)
    try:
        second.wait("/v2/models/adder/ready")  # its models are loaded...
        deadline = time.monotonic() + 30
        while "started, but not ready" not in second.log():
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.05)
        ready = httpx.get(second.url + "/v2/health/ready")  # ...but it is not ready, and says why
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "uses the state folder" in ready.json()["unavailable"]["async"]
        assert httpx.get(second.url + "/ping").status_code == 503
    finally:
        assert second.stop() == 0, second.log()
