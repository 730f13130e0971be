"""Scale to zero with model control on-demand, served by a real ``inferd serve``: a model without a request for
``idle_unload_s`` (the server's, or its model.toml's) is unloaded and its next request loads it again; a request in
flight keeps it; a model that says 0, or is pinned, stays; each load's time is in the statistics and /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from demand_models import infer_body, loads, write_counted
from server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("idle") / "models"
    write_counted(root, "idles", delay=0.2)
    write_counted(root, "busy")
    write_counted(root, "stays", toml="idle_unload_s = 0\n")
    write_counted(root, "pinned", toml="pinned = true\n")
    write_counted(root, "quick", toml="idle_unload_s = 0.5\n")
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log",
                            extra_args=["--model-control", "on-demand", "--idle-unload-s", "2"])
    yield from process.serving()


def _state(server: ServerProcess, name: str) -> str:
    rows = httpx.post(server.url + "/v2/repository/index", json={}).json()
    return next(row["state"] for row in rows if row["name"] == name)


def _infer(server: ServerProcess, name: str, value: float = 1.0) -> httpx.Response:
    return httpx.post(server.url + f"/v2/models/{name}/infer", json=infer_body([value]), timeout=60)


def _wait_for(server: ServerProcess, name: str, state: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while _state(server, name) != state:
        assert time.monotonic() < deadline, f"{name} not {state} after {within_s} s:\n{server.log()}"
        time.sleep(0.1)


def test_an_idle_model_is_unloaded_and_its_next_request_loads_it_again(server):
    assert _infer(server, "idles").status_code == 200
    stats = httpx.get(server.url + "/v2/models/idles/stats").json()["model_stats"][0]
    assert stats["load_ns"] >= 200_000_000
    metrics = httpx.get(server.url + "/metrics").text
    assert 'inferd_model_load_seconds{model="idles",version="1"}' in metrics
    _wait_for(server, "idles", "UNLOADED")
    assert "no request for 2 s (idle_unload_s)" in server.log()
    again = _infer(server, "idles", 3.0)
    assert again.status_code == 200
    assert again.json()["outputs"][0]["data"] == [6.0]
    assert loads(server.repository, "idles") == 2


def test_model_toml_idle_unload_s_overrides_the_server_default(server):
    assert _infer(server, "quick").status_code == 200
    _wait_for(server, "quick", "UNLOADED", within_s=10)


def test_a_request_in_flight_keeps_its_model_loaded(server):
    answers: list[httpx.Response] = []
    call = threading.Thread(target=lambda: answers.append(_infer(server, "busy", -4.0)))  # runs 4 s: past idle
    call.start()
    _wait_for(server, "busy", "READY")
    time.sleep(3.0)  # past the idle limit, the call still running
    assert _state(server, "busy") == "READY"
    call.join()
    assert answers[0].status_code == 200


def test_models_that_say_0_or_are_pinned_stay_loaded(server):
    assert _infer(server, "stays").status_code == 200
    assert _infer(server, "pinned").status_code == 200
    time.sleep(3.5)  # past the server's idle_unload_s
    assert _state(server, "stays") == "READY"
    assert _state(server, "pinned") == "READY"
