"""Asynchronous inference through real ``inferd serve`` subprocesses: kill -9 in the middle of a backlog and a
restart on the same state folder, a 256 MiB upload with the server's memory watched from /proc, callbacks to a
real HTTP receiver, and the ``inferd jobs`` commands."""

from __future__ import annotations

import collections
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callback_receiver import CallbackReceiver
from cli_runner import inferd
from fakes import write_model
from server_process import ServerProcess, free_port

TRIPLER = """
import time
from pathlib import Path

HOLD = 13

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def load(self, path):
        self.folder = Path(path)

    def predict(self, inputs):
        x = inputs["x"]
        with open(self.folder / "ran.log", "a") as log:
            log.write(f"{int(x[0])}\\n")
        time.sleep(0.03)
        deadline = time.monotonic() + 60
        while int(x[0]) == HOLD and not (self.folder / "open").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"y": x * 3 + 1}
"""
"""Logs every run, takes 30 ms, and holds request 13 until the file ``open`` exists: the test kills the
server while 13 runs, for certain."""

SIZER = """
import time
from pathlib import Path

import numpy as np

RELEASE = Path(__file__).parent / "release"

class Model:
    inputs = [{"name": "x", "datatype": "UINT8", "shape": [1, -1]}]
    outputs = [{"name": "n", "datatype": "INT64", "shape": [1]},
               {"name": "total", "datatype": "INT64", "shape": [1]}]

    def predict(self, inputs):
        x = inputs["x"]
        deadline = time.monotonic() + 60
        while x.size < 100 and not RELEASE.exists() and time.monotonic() < deadline:
            time.sleep(0.05)   # a small job holds the model until the test has uploaded a big one
        return {"n": np.array([x.size], dtype=np.int64), "total": np.array([x.sum(dtype=np.int64)])}
"""


def tripler_body(i: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [i]}]}


def wait_all(client: httpx.Client, ids: list[str], status: str = "succeeded", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            if client.get(f"/v2/jobs/{job_id}").json()["status"] == status:
                pending.discard(job_id)
        time.sleep(0.05)
    assert not pending, f"not {status} after {timeout} s: {sorted(pending)}"


def test_kill_9_mid_backlog_then_restart_every_accepted_job_succeeds_once(tmp_path):
    repo = tmp_path / "models"
    folder = write_model(repo, "tripler", TRIPLER) / "1"
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    env = {"INFERD_ASYNC_CONCURRENCY_PER_MODEL": "2"}
    first = ServerProcess(repo, tmp_path / "first.log", extra_args=args, env=env).start()
    accepted: dict[str, int] = {}
    try:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            for i in range(20):
                reply = client.post("/v2/models/tripler/infer-async", json=tripler_body(i),
                                    headers={"Inference-Id": f"job-{i}"})
                assert reply.status_code == 202
                accepted[reply.json()["id"]] = i

            def keep_submitting() -> None:  # still submitting when the server dies
                for i in range(20, 60):
                    try:
                        reply = client.post("/v2/models/tripler/infer-async", json=tripler_body(i),
                                            headers={"Inference-Id": f"job-{i}"})
                    except httpx.HTTPError:
                        return
                    if reply.status_code == 202:
                        accepted[reply.json()["id"]] = i  # acknowledged: it must survive
                    time.sleep(0.01)

            submitter = threading.Thread(target=keep_submitting)
            submitter.start()
            ran_log = folder / "ran.log"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = client.get("/v2/jobs", params={"status": "succeeded", "limit": 1000}).json()["jobs"]
                if len(done) >= 5 and ran_log.exists() and "13" in ran_log.read_text().split():
                    break
                time.sleep(0.02)
            first.kill()
            submitter.join()
    finally:
        first.kill()
    before = collections.Counter(ran_log.read_text().split())
    assert before["13"] == 1
    assert len(done) < len(accepted)  # the kill really was mid-way

    (folder / "open").touch()  # job 13 may finish on its second run
    second = ServerProcess(repo, tmp_path / "second.log", extra_args=args, env=env).start()
    try:
        with httpx.Client(base_url=second.url, timeout=10) as client:
            wait_all(client, list(accepted))
            for job_id, i in accepted.items():
                result = client.get(f"/v2/jobs/{job_id}/result")
                assert result.json()["outputs"][0]["data"] == [3 * i + 1], job_id
            assert client.get("/v2/jobs/job-13").json()["attempts"] == 2  # the kill cost it one attempt
            again = client.post("/v2/models/tripler/infer-async", json=tripler_body(0), headers={"Inference-Id": "job-0"})
            assert (again.status_code, again.json()["id"]) == (200, "job-0")  # still the same job
    finally:
        assert second.stop() == 0, second.log()
    runs = collections.Counter(int(t) for t in (folder / "ran.log").read_text().split())
    assert runs[13] == 2  # at-least-once: it ran again after the restart
    assert all(runs[i] >= 1 for i in accepted.values())
    with sqlite3.connect(state / "jobs.db") as conn:
        rows = conn.execute("SELECT public_id, status, result_size FROM jobs").fetchall()
    assert {r[0] for r in rows} >= set(accepted)
    assert len(rows) == len({r[0] for r in rows})  # one record per id (one owner: the server has no keys)
    assert all(status == "succeeded" and size for _, status, size in rows), rows  # each with exactly one result


def _memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.mark.slow
def test_a_256_mib_upload_keeps_server_memory_bounded(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "sizer", SIZER)
    server = ServerProcess(repo, tmp_path / "serve.log", env={"INFERD_ASYNC_CONCURRENCY_PER_MODEL": "1"}).start()
    size = 256 * 1024 * 1024
    chunk = bytes(range(256)) * 4096  # 1 MiB
    header = json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, size],
                                     "parameters": {"binary_data_size": size}}]}).encode()

    def body() -> Iterator[bytes]:
        yield header
        for _ in range(size // len(chunk)):
            yield chunk

    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            small = client.post("/v2/models/sizer/infer-async", json={"inputs": [
                {"name": "x", "datatype": "UINT8", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).json()
            wait_all(client, [small["id"]], "running", timeout=10)  # the model is busy: the big job waits
            pid = server.process.pid
            baseline = _memory_kib(pid, "VmRSS")
            peak = [baseline]
            uploading = threading.Event()
            uploading.set()

            def watch() -> None:
                while uploading.is_set():
                    peak.append(_memory_kib(pid, "VmRSS"))
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                big = client.post("/v2/models/sizer/infer-async", content=body(), headers={
                    "Inference-Header-Content-Length": str(len(header)),
                    "Content-Length": str(len(header) + size), "Content-Type": "application/octet-stream"})
            finally:
                uploading.clear()
                watcher.join()
            assert big.status_code == 202, big.text
            growth_mib = (max(peak) - baseline) / 1024
            assert client.get(big.json()["status_url"]).json()["status"] == "queued"  # memory was the upload's
            assert growth_mib < 64, f"server RSS grew {growth_mib:.0f} MiB during a 256 MiB upload"
            (repo / "sizer" / "1" / "release").touch()
            wait_all(client, [small["id"], big.json()["id"]], timeout=60)
            outputs = client.get(big.json()["result_url"]).json()["outputs"]
            assert [o["data"] for o in outputs] == [[size], [size // 256 * sum(range(256))]]
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("async-e2e")
    write_model(root / "models", "tripler", TRIPLER)
    env = {"INFERD_ASYNC_RETRY_BACKOFF_S": "0.05", "INFERD_ASYNC_CALLBACK_MAX_ATTEMPTS": "3",
           "INFERD_ASYNC_CONCURRENCY_PER_MODEL": "1",
           "INFERD_ASYNC_CALLBACK_ALLOWED": '["127.0.0.1"]'}  # the loopback receivers: allowed explicitly
    server = ServerProcess(root / "models", root / "serve.log", env=env).start()
    yield server
    (root / "models" / "tripler" / "1" / "open").touch()
    assert server.stop() == 0, server.log()


def test_callbacks_are_retried_and_recorded_and_never_touch_the_result(jobs_server):
    with CallbackReceiver(fail_first=2) as receiver, httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        ok = client.post("/v2/models/tripler/infer-async", json=tripler_body(2),
                         headers={"Inference-Callback-Url": receiver.url}).json()
        down = client.post("/v2/models/tripler/infer-async", json=tripler_body(3),
                           headers={"Inference-Callback-Url": f"http://127.0.0.1:{free_port()}/gone"}).json()
        wait_all(client, [ok["id"], down["id"]])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [client.get(f"/v2/jobs/{j['id']}").json()["callback"] for j in (ok, down)]
            if all(s["state"] != "pending" for s in states):
                break
            time.sleep(0.05)
    delivered, failed = states
    assert delivered["state"] == "delivered"
    assert [a["status_code"] for a in delivered["attempts"]] == [500, 500, 200]
    assert [r["body"]["status"] for r in receiver.received] == ["succeeded"] * 3
    assert receiver.received[0]["body"]["id"] == ok["id"]
    assert failed["state"] == "failed"
    assert len(failed["attempts"]) == 3
    assert all("ConnectError" in a["error"] for a in failed["attempts"])
    assert client_result(jobs_server, down["id"]) == [10]  # 3 * 3 + 1, whatever the callback did


def test_a_callback_to_a_loopback_address_not_listed_is_refused_with_400(jobs_server):
    reply = httpx.post(f"{jobs_server.url}/v2/models/tripler/infer-async", json=tripler_body(4), timeout=10,
                       headers={"Inference-Callback-Url": "http://[::1]:27999/internal/admin?x=1"})
    assert reply.status_code == 400
    assert "async_callback_allowed" in reply.json()["error"]


def client_result(server: ServerProcess, job_id: str) -> list[int]:
    reply = httpx.get(f"{server.url}/v2/jobs/{job_id}/result", timeout=10)
    assert reply.status_code == 200
    data: list[int] = reply.json()["outputs"][0]["data"]
    return data


def test_jobs_commands_against_a_running_server(jobs_server, tmp_path):
    url = ["--url", jobs_server.url]
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        done = client.post("/v2/models/tripler/infer-async", json=tripler_body(5)).json()
        wait_all(client, [done["id"]])
        held = client.post("/v2/models/tripler/infer-async", json=tripler_body(13)).json()  # holds the model
        wait_all(client, [held["id"]], "running")
        queued = client.post("/v2/models/tripler/infer-async", json=tripler_body(6)).json()

    listed = inferd("jobs", "list", *url)
    assert listed.returncode == 0, listed.stderr
    for job in (done, held, queued):
        assert job["id"] in listed.stdout
    assert "succeeded" in listed.stdout
    assert "running" in listed.stdout
    assert "queued" in listed.stdout
    only = inferd("jobs", "list", "--status", "running", *url)
    assert held["id"] in only.stdout
    assert done["id"] not in only.stdout

    shown = inferd("jobs", "show", done["id"], *url)
    assert shown.returncode == 0
    assert "succeeded" in shown.stdout
    assert "tripler" in shown.stdout

    result = inferd("jobs", "result", done["id"], *url)
    assert result.returncode == 0
    assert json.loads(result.stdout)["outputs"][0]["data"] == [16]
    saved = tmp_path / "result.json"
    assert inferd("jobs", "result", done["id"], *url, "-o", str(saved)).returncode == 0
    assert json.loads(saved.read_bytes())["outputs"][0]["data"] == [16]

    cancelled = inferd("jobs", "cancel", queued["id"], *url)
    assert cancelled.returncode == 0
    assert "cancelled" in cancelled.stdout
    refused = inferd("jobs", "cancel", held["id"], *url)
    assert refused.returncode == 1
    assert "HTTP 409" in refused.stderr
    assert "only a queued job" in refused.stderr
    not_ready = inferd("jobs", "result", held["id"], *url)
    assert not_ready.returncode == 1
    assert "not ready yet" in not_ready.stderr
    missing = inferd("jobs", "show", "nobody", *url)
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr
    nowhere = inferd("jobs", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 1
    assert "cannot reach the inferd server" in nowhere.stderr
