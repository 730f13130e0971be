"""A model call that does not return, served by a real ``inferd serve``: its caller gets 504 within the
model's execution timeout (an async job ends failed), the server keeps serving its other models, a worker
process past the limit is replaced, an in-process instance is not ready until its call returns, SIGTERM
finishes with a call hung, and kill -9 of the server leaves no worker process and no shared memory segment."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fakes import ADDER, write_model
from server_process import ServerProcess

SLEEPER = """
import time
import numpy as np

class Model:
    inputs = [{"name": "seconds", "datatype": "FP64", "shape": [-1]}]
    outputs = [{"name": "slept", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        time.sleep(float(inputs["seconds"].max()))
        return {"slept": inputs["seconds"]}
"""
FOREVER = 1e6
LIMIT_S = 1.0


def _sleeper_toml(kind: str, timeout_s: float = LIMIT_S) -> str:
    return f'[instances]\nkind = "{kind}"\nexecution_timeout_s = {timeout_s}\n'


def _repository(root: Path) -> Path:
    write_model(root, "sleeper", SLEEPER, _sleeper_toml("thread"))
    write_model(root, "sleeper-process", SLEEPER, _sleeper_toml("process"))
    write_model(root, "hung-process", SLEEPER, _sleeper_toml("process", 600))
    write_model(root, "adder", ADDER)
    return root


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return _repository(tmp_path / "models")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = _repository(tmp_path_factory.mktemp("hanging") / "models")
    yield from ServerProcess(root, root.parent / "serve.log", env={"INFERD_ASYNC_MAX_ATTEMPTS": "1"}).serving(
        timeout=120)


def _sleep(server: ServerProcess, model: str, seconds: float, timeout: float = 30) -> httpx.Response:
    body = {"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [seconds]}]}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=timeout)


def _sleep_in_background(server: ServerProcess, model: str) -> threading.Thread:
    """A call that hangs, from a thread (its connection fails when the server goes: that is expected)."""
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            _sleep(server, model, FOREVER)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _adder_answers(server: ServerProcess) -> bool:
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                       {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}]}
    return httpx.post(f"{server.url}/v2/models/adder/infer", json=body, timeout=10).status_code == 200


def _ready(server: ServerProcess, model: str) -> bool:
    return httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=10).status_code == 200


def _wait_ready(server: ServerProcess, model: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _ready(server, model):
        assert time.monotonic() < deadline, f"model {model} not ready again after {timeout} s:\n{server.log()}"
        time.sleep(0.1)


def _index(server: ServerProcess) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()}


def _workers(server_pid: int) -> set[int]:
    """The server's worker processes (its spawned children, not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == server_pid and b"multiprocessing-fork" in command:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_thread_call_past_the_limit_answers_504_and_the_model_waits_for_it(server: ServerProcess) -> None:
    started = time.monotonic()
    answer = _sleep(server, "sleeper", 4)
    assert time.monotonic() - started < LIMIT_S + 3  # the limit, and a loaded machine's slack
    assert answer.status_code == 504, answer.text
    assert "'sleeper'" in answer.json()["error"]
    assert "execution timeout of 1 s" in answer.json()["error"]
    assert not _ready(server, "sleeper")  # the call still holds its thread
    row = _index(server)["sleeper"]
    assert row["state"] == "UNAVAILABLE"
    assert "execution timeout" in row["reason"]
    refused = _sleep(server, "sleeper", 0)
    assert refused.status_code == 503
    assert "'sleeper' is not taking requests" in refused.json()["error"]
    assert _adder_answers(server)
    _wait_ready(server, "sleeper", timeout=10)  # the 4 s call returned
    assert _sleep(server, "sleeper", 0).status_code == 200


def test_process_worker_past_the_limit_is_killed_and_replaced(server: ServerProcess) -> None:
    assert server.process is not None
    _wait_ready(server, "sleeper-process")
    before = _workers(server.process.pid)
    started = time.monotonic()
    answer = _sleep(server, "sleeper-process", FOREVER)
    assert time.monotonic() - started < LIMIT_S + 3  # the limit, and a loaded machine's slack
    assert answer.status_code == 504, answer.text
    assert "'sleeper-process'" in answer.json()["error"]
    assert "was killed and is being replaced" in answer.json()["error"]
    assert _adder_answers(server)
    _wait_ready(server, "sleeper-process")
    assert _sleep(server, "sleeper-process", 0).status_code == 200
    after = _workers(server.process.pid)
    assert len(before - after) == 1  # the hung one is gone, and a new one serves
    assert len(after - before) == 1


def test_an_async_job_on_a_hung_model_ends_failed_instead_of_waiting_for_ever(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [FOREVER]}]}
    job = httpx.post(f"{server.url}/v2/models/sleeper-process/infer-async", json=body, timeout=10)
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 30
    while (status := httpx.get(f"{server.url}/v2/jobs/{job.json()['id']}", timeout=10).json())["status"] in (
            "queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "DEADLINE_EXCEEDED"
    assert "execution timeout of 1 s" in status["error"]["message"]


def test_sigterm_with_a_call_hung_finishes_within_the_grace_period(repository: Path, tmp_path: Path) -> None:
    server = ServerProcess(repository, tmp_path / "serve.log").start(timeout=120)
    assert server.process is not None
    try:
        _sleep_in_background(server, "sleeper")
        time.sleep(0.3)
        started = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        code = server.process.wait(timeout=LIMIT_S + 15)
        assert code == 0, server.log()
        assert time.monotonic() - started < LIMIT_S + 10
    finally:
        server.kill()


def test_kill_9_of_the_server_leaves_no_worker_and_no_segment(repository: Path, tmp_path: Path) -> None:
    server = ServerProcess(repository, tmp_path / "serve.log").start(timeout=120)
    assert server.process is not None
    pid = server.process.pid
    _sleep_in_background(server, "hung-process")
    workers = _workers(pid)
    assert len(workers) == 2  # one for sleeper-process, one for hung-process
    segments = list(Path("/dev/shm").glob(f"inferd-{pid}-*"))
    assert segments
    time.sleep(0.5)  # the hung call is in its worker
    server.kill()
    try:
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) or any(s.exists() for s in segments):
            assert time.monotonic() < deadline, (f"left behind: {[w for w in workers if _alive(w)]} "
                                                 f"{[s for s in segments if s.exists()]}")
            time.sleep(0.1)
    finally:
        for worker in workers:  # what this test started, should it have been left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
