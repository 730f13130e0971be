"""The memory budget of model control on-demand, served by a real ``inferd serve``: a load past the budget first
unloads the least recently used idle model; a model with a request in flight, or pinned, is never the one; with
nothing to unload the request gets 503 with Retry-After naming the budget; a model larger than the whole budget
(declared or measured) gets a clear error at load. Loads through the repository API (REST and gRPC) and reloads by
repository polling are held to the budget in the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from demand_models import infer_body, loads, write_counted
from server_process import ServerProcess

SIZE = 'memory_size = "40MiB"\n'


def _states(server: ServerProcess) -> dict[str, str]:
    rows = httpx.post(server.url + "/v2/repository/index", json={}).json()
    return {row["name"]: row["state"] for row in rows}


def _infer(server: ServerProcess, name: str, value: float = 1.0) -> httpx.Response:
    return httpx.post(server.url + f"/v2/models/{name}/infer", json=infer_body([value]), timeout=60)


def _start_slow(server: ServerProcess, name: str, answers: list[httpx.Response]) -> threading.Thread:
    """A call to ``name`` that runs for 4 s, under way when this returns."""
    call = threading.Thread(target=lambda: answers.append(_infer(server, name, -4.0)))
    call.start()
    time.sleep(1.0)  # for the request to reach the model (it then runs for 3 s more)
    return call


@pytest.fixture
def budget_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Room for two of the 40 MiB models under a 100 MiB budget."""
    root = tmp_path / "models"
    for name in ("a", "b", "c"):
        write_counted(root, name, toml=SIZE)
    write_counted(root, "pinned", toml=SIZE + "pinned = true\n")
    write_counted(root, "huge", toml='memory_size = "200MiB"\n')
    write_counted(root, "measured_huge", hold_mb=200)
    process = ServerProcess(root, tmp_path / "serve.log",
                            extra_args=["--model-control", "on-demand", "--memory-budget", "100MiB"])
    yield from process.serving()


def test_a_load_past_the_budget_unloads_the_least_recently_used_idle_model(budget_server):
    assert _infer(budget_server, "a").status_code == 200
    assert _infer(budget_server, "b").status_code == 200
    assert _infer(budget_server, "a").status_code == 200  # b is now the least recently used
    assert _infer(budget_server, "c").status_code == 200
    states = _states(budget_server)
    assert (states["a"], states["b"], states["c"]) == ("READY", "UNLOADED", "READY")
    assert _infer(budget_server, "b").status_code == 200  # loads again, in place of a
    assert loads(budget_server.repository, "b") == 2
    assert _states(budget_server)["a"] == "UNLOADED"


def test_a_model_with_a_request_in_flight_is_never_unloaded_under_it(budget_server):
    assert _infer(budget_server, "a").status_code == 200
    assert _infer(budget_server, "b").status_code == 200
    slow: list[httpx.Response] = []
    call = _start_slow(budget_server, "a", slow)
    try:  # a was used last but is busy: b goes
        response = _infer(budget_server, "c")
        assert response.status_code == 200, response.text
        states = _states(budget_server)
        assert (states["a"], states["b"]) == ("READY", "UNLOADED")
    finally:
        call.join()
    assert slow[0].status_code == 200, slow[0].text


def test_nothing_to_unload_answers_503_with_retry_after_naming_the_budget(budget_server):
    assert _infer(budget_server, "pinned").status_code == 200
    assert _infer(budget_server, "a").status_code == 200
    slow: list[httpx.Response] = []
    call = _start_slow(budget_server, "a", slow)
    try:
        response = _infer(budget_server, "b")
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers
        assert "memory budget 100.0MiB (memory_budget) is full" in response.json()["error"]
    finally:
        call.join()
    assert slow[0].status_code == 200
    assert _infer(budget_server, "b").status_code == 200  # a is idle again: it makes room, pinned stays
    states = _states(budget_server)
    assert (states["pinned"], states["a"], states["b"]) == ("READY", "UNLOADED", "READY")


def test_a_model_larger_than_the_whole_budget_is_a_clear_error_at_load(budget_server):
    declared = _infer(budget_server, "huge")
    assert declared.status_code == 400
    assert "needs 200.0MiB, more than the whole memory budget 100.0MiB (memory_budget)" in declared.json()["error"]
    assert loads(budget_server.repository, "huge") == 0  # refused before loading
    measured = _infer(budget_server, "measured_huge")
    assert measured.status_code == 400
    assert "once loaded (measured), more than the whole memory budget 100.0MiB" in measured.json()["error"]
    assert _states(budget_server)["measured_huge"] == "UNLOADED"


def _load(server: ServerProcess, name: str) -> httpx.Response:
    return httpx.post(server.url + f"/v2/repository/models/{name}/load", json={}, timeout=60)


def test_a_load_through_the_repository_api_unloads_the_least_recently_used_idle_model(budget_server):
    assert _infer(budget_server, "a").status_code == 200
    assert _infer(budget_server, "b").status_code == 200
    loaded = _load(budget_server, "c")
    assert loaded.status_code == 200, loaded.text
    states = _states(budget_server)
    assert (states["a"], states["b"], states["c"]) == ("UNLOADED", "READY", "READY")
    with grpcclient.InferenceServerClient(budget_server.grpc_url) as client:
        client.load_model("a")  # over gRPC too: b is the least recently used now
    states = _states(budget_server)
    assert (states["a"], states["b"], states["c"]) == ("READY", "UNLOADED", "READY")


def test_a_load_through_the_repository_api_with_nothing_to_unload_is_refused_naming_the_budget(budget_server):
    assert _infer(budget_server, "pinned").status_code == 200
    assert _infer(budget_server, "a").status_code == 200
    slow: list[httpx.Response] = []
    call = _start_slow(budget_server, "a", slow)
    try:
        refused = _load(budget_server, "b")
        assert refused.status_code == 503, refused.text
        assert "Retry-After" in refused.headers
        assert "memory budget 100.0MiB (memory_budget) is full" in refused.json()["error"]
        with grpcclient.InferenceServerClient(budget_server.grpc_url) as client, \
                pytest.raises(InferenceServerException) as info:
            client.load_model("b")
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert "memory budget 100.0MiB (memory_budget) is full" in str(info.value.message())
    finally:
        call.join()
    assert slow[0].status_code == 200
    assert loads(budget_server.repository, "b") == 0  # refused before it loaded
    huge = _load(budget_server, "huge")
    assert huge.status_code == 400
    assert "more than the whole memory budget 100.0MiB (memory_budget)" in huge.json()["error"]


def test_a_reload_by_polling_waits_for_room_under_the_budget(tmp_path):
    """A changed model loads its new version beside the old one: with the rest of the budget pinned it keeps
    serving the old one, the budget named in the index, and follows the change once there is room."""
    root = tmp_path / "models"
    write_counted(root, "pinned", toml=SIZE + "pinned = true\n")
    write_counted(root, "a", toml=SIZE)
    server = ServerProcess(root, tmp_path / "serve.log", extra_args=[
        "--model-control", "on-demand", "--memory-budget", "100MiB", "--poll-s", "0.2"])
    try:
        server.start()
        assert _infer(server, "pinned").status_code == 200
        assert _infer(server, "a").status_code == 200
        write_counted(root, "a", toml=SIZE, version=2, factor=3)  # 40 MiB more while version 1 still serves
        _until(server, lambda: "memory budget 100.0MiB (memory_budget) is full" in _reason(server, "a"))
        assert _infer(server, "a").json()["outputs"][0]["data"] == [2.0]  # version 1 serves on
        assert loads(root, "a") == 1
        assert httpx.post(server.url + "/v2/repository/models/pinned/unload", json={}).status_code == 200
        _until(server, lambda: _infer(server, "a").json()["outputs"][0]["data"] == [3.0])  # the next poll
        assert _reason(server, "a") == ""
    finally:
        assert server.stop() == 0, server.log()


def _reason(server: ServerProcess, name: str) -> str:
    rows = httpx.post(server.url + "/v2/repository/index", json={}).json()
    return " ".join(row.get("reason", "") for row in rows if row["name"] == name)


def _until(server: ServerProcess, check: Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def _workers(server_pid: int) -> set[int]:
    """The server's live worker processes (spawned children; not its resource tracker, not zombies)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            command = (entry / "cmdline").read_bytes() if stat else b""
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields and int(fields[1]) == server_pid and fields[0] != "Z" and b"multiprocessing-fork" in command:
            found.add(int(entry.name))
    return found


def test_kill_9_of_a_worker_while_its_model_is_unloaded_to_make_room(tmp_path):
    import os
    import signal

    root = tmp_path / "models"
    process_kind = 'memory_size = "60MiB"\n[instances]\nkind = "process"\n'
    write_counted(root, "worker", toml=process_kind)
    write_counted(root, "other", toml='memory_size = "60MiB"\n')
    server = ServerProcess(root, tmp_path / "serve.log",
                           extra_args=["--model-control", "on-demand", "--memory-budget", "100MiB"])
    try:
        server.start()
        assert _infer(server, "worker").status_code == 200
        assert server.process is not None
        workers = _workers(server.process.pid)
        assert workers
        answers: list[httpx.Response] = []
        making_room = threading.Thread(target=lambda: answers.append(_infer(server, "other")))
        making_room.start()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        making_room.join()
        assert answers[0].status_code == 200, answers[0].text
        deadline = time.monotonic() + 30
        while _workers(server.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _workers(server.process.pid) == set()  # no worker left behind, none respawned for a closed model
        assert _states(server)["worker"] == "UNLOADED"
        again = _infer(server, "worker", 2.0)  # loads again, in place of other
        assert again.status_code == 200, again.text
        assert again.json()["outputs"][0]["data"] == [4.0]
    finally:
        assert server.stop() == 0, server.log()
