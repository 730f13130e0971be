"""Repository polling (``--poll-s``), served by a real ``inferd serve``: new model and version folders are picked
up, a changed model.toml reloads its model, an invalid one leaves the old versions serving with the error in the
index, a removed folder's model is unloaded once its request in flight is answered, and no request fails while a
version is switched."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from demand_models import infer_body, loads, write_counted
from server_process import ServerProcess


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "models"
    write_counted(root, "kept")
    process = ServerProcess(root, tmp_path / "serve.log", extra_args=["--poll-s", "0.2"])
    yield from process.serving()


def _infer(server: ServerProcess, name: str, value: float = 1.0) -> httpx.Response:
    return httpx.post(server.url + f"/v2/models/{name}/infer", json=infer_body([value]), timeout=60)


def _index(server: ServerProcess) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = httpx.post(server.url + "/v2/repository/index", json={}).json()
    return rows


def _eventually(check: Callable[[], bool], server: ServerProcess, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def test_a_new_model_folder_is_picked_up(polled):
    assert _infer(polled, "later").status_code == 404
    write_counted(polled.repository, "later")
    _eventually(lambda: _infer(polled, "later").status_code == 200, polled)


def test_a_new_version_takes_over_and_no_request_fails_during_the_switch(polled):
    failures: list[str] = []
    answers: set[float] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=polled.url, timeout=60) as client:
            while not stop.is_set():
                response = client.post("/v2/models/kept/infer", json=infer_body([1.0]))
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    answers.add(response.json()["outputs"][0]["data"][0])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        _eventually(lambda: 2.0 in answers, polled)  # version 1 answers before version 2 comes (a busy machine)
        write_counted(polled.repository, "kept", version=2, factor=3)
        _eventually(lambda: 3.0 in answers, polled)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert answers == {2.0, 3.0}
    rows = [r for r in _index(polled) if r["name"] == "kept"]
    assert [(r["version"], r["state"]) for r in rows] == [("2", "READY")]  # policy latest: version 1 went


def test_a_changed_model_toml_reloads_and_an_invalid_one_keeps_the_old_serving(polled):
    folder = polled.repository / "kept"
    before = loads(polled.repository, "kept")
    (folder / "model.toml").write_text('description = "changed"\n')
    _eventually(lambda: loads(polled.repository, "kept") > before, polled)
    (folder / "model.toml").write_text("max_batch_size = -3\n")
    _eventually(lambda: any(r["name"] == "kept" and "cannot be served" in r.get("reason", "")
                            for r in _index(polled)), polled)
    row = next(r for r in _index(polled) if r["name"] == "kept")
    assert row["state"] == "READY"
    assert "max_batch_size" in row["reason"]
    assert _infer(polled, "kept").status_code == 200
    (folder / "model.toml").write_text('description = "fixed"\n')
    _eventually(lambda: not next(r for r in _index(polled) if r["name"] == "kept").get("reason"), polled)
    assert _infer(polled, "kept").status_code == 200


def test_a_removed_model_is_unloaded_after_its_request_in_flight(polled):
    write_counted(polled.repository, "doomed")
    _eventually(lambda: _infer(polled, "doomed").status_code == 200, polled)
    answers: list[httpx.Response] = []
    call = threading.Thread(target=lambda: answers.append(_infer(polled, "doomed", -3.0)))
    call.start()
    time.sleep(1.0)  # the call is running
    shutil.rmtree(polled.repository / "doomed")
    _eventually(lambda: _infer(polled, "doomed").status_code == 404, polled)
    call.join()
    assert answers[0].status_code == 200, answers[0].text
    assert "doomed" not in {r["name"] for r in _index(polled)}


def test_on_demand_a_failed_model_loads_again_once_its_folder_is_fixed(tmp_path):
    root = tmp_path / "models"
    write_counted(root, "flaky", fail=True)
    process = ServerProcess(root, tmp_path / "serve.log",
                            extra_args=["--poll-s", "0.2", "--model-control", "on-demand"])
    try:
        process.start()
        assert _infer(process, "flaky").status_code == 503
        time.sleep(0.3)
        write_counted(root, "flaky", factor=5)
        _eventually(lambda: _infer(process, "flaky").status_code == 200, process)
        assert _infer(process, "flaky").json()["outputs"][0]["data"] == [5.0]
        write_counted(root, "fresh")  # on demand, a new folder waits for its first request
        time.sleep(0.6)
        assert loads(root, "fresh") == 0
        assert _infer(process, "fresh").status_code == 200
    finally:
        assert process.stop() == 0, process.log()
