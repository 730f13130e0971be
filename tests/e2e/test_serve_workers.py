"""``inferd serve --workers 2`` as real processes: a supervisor and two workers on one HTTP and one gRPC port,
called with httpx and tritonclient over fresh connections (the kernel spreads connections, not requests), one
worker killed with -9 while the other answers, asynchronous jobs on the shared SQLite store run exactly once,
/metrics for both workers, and SIGTERM stopping everything."""

from __future__ import annotations

import collections
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from cli_runner import inferd
from fakes import write_model
from server_process import ServerProcess

COUNTER = """
import os
import time
from pathlib import Path

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "pid", "datatype": "INT64", "shape": [-1]}]

    def load(self, path):
        self.log = Path(path).parent.parent / "ran.log"

    def predict(self, inputs):
        x = int(inputs["x"][0])
        with open(self.log, "a") as log:
            log.write(f"{x} {os.getpid()}\\n")
        hold = self.log.parent / f"hold-{x}"
        deadline = time.monotonic() + 60
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"pid": inputs["x"] * 0 + os.getpid()}
"""
"""Answers with the pid of the process that ran it (the server worker, or a model process under it) and logs every
run (its input and that pid), and holds an input x while the file ``hold-x`` exists."""


def body(x: int) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [x]}]}


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(part) for part in text.split()}


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents, up to init."""
    found = []
    while pid > 1:
        found.append(pid)
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_for(check, timeout: float = 60.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def fresh_infer(url: str, x: int) -> int:
    """One request on a new connection; the pid that ran it."""
    with httpx.Client(base_url=url, timeout=30) as client:
        reply = client.post("/v2/models/counter/infer", json=body(x))
    assert reply.status_code == 200, reply.text
    return int(reply.json()["outputs"][0]["data"][0])


def success_by_process(url: str, model: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    found: dict[str, float] = collections.Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "inferd_request_success":
            for sample in family.samples:
                if sample.labels["model"] == model and sample.name.endswith("_total"):
                    found[sample.labels["process"]] += sample.value
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers") / "models"
    write_model(root, "counter", COUNTER)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repo, tmp_path_factory.mktemp("logs") / "serve.log", extra_args=["--workers", "2"])
    yield from process.serving(timeout=120)


def workers_of(server: ServerProcess) -> set[int]:
    assert server.process is not None
    return children(server.process.pid)


def test_two_workers_serve_http_and_grpc_on_one_port_each(server):
    wait_for(lambda: len(workers_of(server)) == 2, what="two workers")
    pids = {fresh_infer(server.url, i) for i in range(40)}
    assert len(pids) == 2  # both workers answered (40 connections all on one: 2 ** -39)
    grpc_pids = set()
    for i in range(24):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            x = grpcclient.InferInput("x", [1], "INT64")
            x.set_data_from_numpy(np.array([i], dtype=np.int64))
            grpc_pids.add(int(client.infer("counter", [x]).as_numpy("pid")[0]))
        finally:
            client.close()
    assert grpc_pids == pids


def test_an_endpoint_made_through_one_worker_is_served_by_both(server):
    wait_for(lambda: len(workers_of(server)) == 2, what="two workers")
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        made = admin.put("/v2/endpoints/front", json={"variants": [{"name": "live", "model": "counter"}]})
        assert made.status_code == 200, made.text

    def both_route() -> bool:  # each worker follows the store: fresh connections land on either
        seen = set()
        for i in range(30):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                reply = client.post("/v2/models/front/infer", json=body(i))
            if reply.status_code != 200 or reply.headers.get("x-inferd-variant") != "live":
                return False
            seen.add(int(reply.json()["outputs"][0]["data"][0]))
        return len(seen) == 2

    try:
        wait_for(both_route, timeout=30, what="both workers route the new endpoint")
    finally:
        httpx.delete(server.url + "/v2/endpoints/front", timeout=30)


def test_metrics_count_the_requests_of_both_workers(server):
    before = success_by_process(server.url, "counter")
    for i in range(30):
        fresh_infer(server.url, i)
    after = success_by_process(server.url, "counter")
    assert set(after) == {"0", "1"}
    assert sum(after.values()) - sum(before.values()) == 30  # whichever worker the scrape landed on


def test_async_jobs_on_two_workers_run_exactly_once(server, repo):
    log = repo / "ran.log"
    start = len(log.read_text().splitlines()) if log.exists() else 0
    ids = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(60):
            reply = client.post("/v2/models/counter/infer-async", json=body(1000 + i), headers={"Connection": "close"})
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["id"])

        def finished() -> bool:
            return all(client.get(f"/v2/jobs/{job}").json()["status"] == "succeeded" for job in ids)

        wait_for(finished, timeout=120, what="every job succeeded")
        results = [client.get(f"/v2/jobs/{job}/result").status_code for job in ids]
    runs = [line.split() for line in log.read_text().splitlines()[start:]]
    assert sorted(int(x) for x, _ in runs) == list(range(1000, 1060))  # each job's model call exactly once
    assert results == [200] * 60


def test_a_killed_worker_is_replaced_while_the_other_answers(server):
    wait_for(lambda: len(workers_of(server)) == 2, what="two workers")
    victim, survivor = sorted(workers_of(server))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not alive(victim), timeout=10, what="the victim gone")
    answered = [fresh_infer(server.url, i) for i in range(20)]  # during the gap: all on the survivor's side
    assert len(answered) == 20
    wait_for(lambda: len(workers_of(server) - {victim}) == 2, timeout=60, what="a replacement")
    (replacement,) = workers_of(server) - {victim, survivor}
    wait_for(lambda: len({fresh_infer(server.url, i) for i in range(8)}) == 2, timeout=60,
             what="the replacement serving")
    assert alive(replacement)
    assert alive(survivor)
    assert "exited with code -9; its replacement starts" in server.log()
    metrics = text_string_to_metric_families(httpx.get(server.url + "/metrics", timeout=30).text)
    (replaced,) = [f.samples[0].value for f in metrics if f.name == "inferd_server_worker_replacements"]
    assert replaced >= 1  # (another test of this module may have killed one too)


def test_a_job_running_on_a_killed_worker_runs_again_and_succeeds_once(server, repo):
    wait_for(lambda: len(workers_of(server)) == 2, what="two workers")
    hold, log = repo / "hold-777", repo / "ran.log"
    hold.touch()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job = client.post("/v2/models/counter/infer-async", json=body(777)).json()["id"]

        def runs() -> list[list[str]]:
            return [line.split() for line in log.read_text().splitlines() if line.startswith("777 ")]

        wait_for(lambda: len(runs()) == 1, what="the job running")
        (running,) = set(ancestors(int(runs()[0][1]))) & workers_of(server)
        os.kill(running, signal.SIGKILL)  # while the model holds the job
        wait_for(lambda: len(runs()) == 2, timeout=60, what="the job running again")  # queued again by the supervisor
        hold.unlink()
        wait_for(lambda: client.get(f"/v2/jobs/{job}").json()["status"] == "succeeded", what="the job succeeded")
        status = client.get(f"/v2/jobs/{job}").json()
    assert status["attempts"] == 2  # the one cut short counts
    assert len(runs()) == 2
    assert "asynchronous jobs it was running: 1, queued again" in server.log()


def test_workers_stop_when_their_supervisor_is_killed(repo, tmp_path):
    process = ServerProcess(repo, tmp_path / "serve.log", extra_args=["--workers", "2"]).start(timeout=120)
    assert process.process is not None
    wait_for(lambda: len(children(process.process.pid)) == 2, what="two workers")  # type: ignore[union-attr]
    workers = children(process.process.pid)
    process.kill()
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=40, what="the workers gone")


def test_sigterm_stops_the_supervisor_and_every_worker(repo, tmp_path):
    process = ServerProcess(repo, tmp_path / "serve.log", extra_args=["--workers", "2"]).start(timeout=120)
    assert process.process is not None
    wait_for(lambda: len(children(process.process.pid)) == 2, what="two workers")  # type: ignore[union-attr]
    workers = children(process.process.pid)
    assert process.stop() == 0, process.log()
    assert not any(alive(pid) for pid in workers)


def test_a_port_in_use_is_one_clear_error_before_any_worker_starts(repo, tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = inferd("serve", str(repo), "--workers", "2", "--http-port", str(port), "--grpc-port", "0",
                        "--state-dir", str(tmp_path / "state"), timeout=60)
    assert result.returncode == 1
    assert f"HTTP port {port} on 127.0.0.1 is in use; choose another with --http-port" in result.stderr
    assert "worker 0 started" not in result.stderr


def test_two_workers_on_postgresql_run_every_job_exactly_once(repo, tmp_path, postgres_dsn):
    process = ServerProcess(repo, tmp_path / "serve.log", extra_args=["--workers", "2", "--job-store", postgres_dsn])
    log = repo / "ran.log"
    start = len(log.read_text().splitlines()) if log.exists() else 0
    try:
        process.start(timeout=120)
        with httpx.Client(base_url=process.url, timeout=30) as client:
            ids = [client.post("/v2/models/counter/infer-async", json=body(5000 + i),
                               headers={"Connection": "close"}).json()["id"] for i in range(40)]
            wait_for(lambda: all(client.get(f"/v2/jobs/{job}").json()["status"] == "succeeded" for job in ids),
                     timeout=120, what="every job succeeded")
    finally:
        assert process.stop() == 0, process.log()
    runs = [int(line.split()[0]) for line in log.read_text().splitlines()[start:]]
    assert sorted(runs) == list(range(5000, 5040))
