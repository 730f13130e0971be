"""Batch jobs submitted over HTTP live in the job store, with real ``inferd serve`` processes and real faults: a
server killed with SIGKILL mid-job, or stopped, and started again finishes the job with every row written exactly
once (SQLite);
two replicas on one PostgreSQL each answer for the other's job, run it once, cancel it for the other, and take over
the job of a replica killed mid-job once its lease runs out."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from batch_models import read_output, write_python_model, write_table
from server_process import ServerProcess

pytestmark = pytest.mark.slow

COUNTING = """
import os
import time

import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        with open(os.environ["EXECUTIONS"], "a") as log:  # one line per row begun: the test counts executions
            log.writelines(f"{int(v)}\\n" for v in inputs["x"])
        time.sleep(float(os.environ.get("BATCH_S", "0.1")))
        return {"y": inputs["x"] * 10}
"""
ROWS, BATCH, CONCURRENCY = 400, 10, 2
LEASE_S = 2.0


@pytest.fixture
def work(tmp_path: Path) -> Path:
    write_python_model(tmp_path / "models", "counting", COUNTING)
    write_table(pa.table({"id": list(range(ROWS))}), tmp_path / "work" / "in.csv")
    return tmp_path / "work"


def server(work: Path, name: str, *args: str, batch_s: float = 0.1) -> ServerProcess:
    return ServerProcess(work.parent / "models", work.parent / f"{name}.log", list(args),
                         env={"INFERD_BATCH_ROOTS": json.dumps([str(work)]), "BATCH_S": str(batch_s),
                              "EXECUTIONS": str(work.parent / f"{name}.executions"),
                              "INFERD_JOB_LEASE_S": str(LEASE_S)})


def submit(to: ServerProcess, work: Path, output: str = "out") -> str:
    body = {"model": "counting", "input": str(work / "in.csv"), "output": str(work / output),
            "batch_size": BATCH, "concurrency": CONCURRENCY, "key": "id", "mapping": {"x": "id"}}
    reply = httpx.post(f"{to.url}/v2/batch/jobs", json=body, timeout=10)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


def status(of: ServerProcess, job_id: str) -> dict[str, Any]:
    reply = httpx.get(f"{of.url}/v2/batch/jobs/{job_id}", timeout=10)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def wait_for(of: ServerProcess, job_id: str, done: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        now = status(of, job_id)
        if done(now):
            return now
        assert time.monotonic() < deadline, now
        time.sleep(0.05)


def executions(work: Path, *names: str) -> Counter[int]:
    paths = [work.parent / f"{name}.executions" for name in names]
    return Counter(int(line) for path in paths if path.exists() for line in path.read_text().split())


def assert_every_row_once(work: Path, output: str = "out") -> None:
    out = read_output(work / output / "in.csv")
    assert out.column("id").to_pylist() == list(range(ROWS))
    assert out.column("y").to_pylist() == [10 * i for i in range(ROWS)]


def finished(state: dict[str, Any]) -> bool:
    return state["state"] not in ("queued", "running")


def test_a_job_survives_kill_9_and_a_restart_writing_every_row_once(work: Path) -> None:
    state_dir = str(work.parent / "state")
    first = server(work, "first", "--state-dir", state_dir).start()
    try:
        job_id = submit(first, work)
        wait_for(first, job_id, lambda s: s["state"] == "running" and s["rows_done"] >= 100)
        first.kill()  # mid-job: mini-batches in flight, the journal part-way
    finally:
        first.stop()
    begun = executions(work, "first")
    assert 100 <= len(begun) < ROWS
    second = server(work, "second", "--state-dir", state_dir).start()  # the same state folder, so the same store
    try:
        done = wait_for(second, job_id, finished)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        assert (done["rows_done"], done["summary"]["rows_out"]) == (ROWS, ROWS)
        assert done["summary"]["resumed_batches"] >= 100 // BATCH  # the second run did not start over
        assert [j["id"] for j in httpx.get(f"{second.url}/v2/batch/jobs", timeout=10).json()["jobs"]] == [job_id]
    finally:
        assert second.stop() == 0, second.log()
    assert_every_row_once(work)
    again = executions(work, "second")
    assert set(begun) | set(again) == set(range(ROWS))
    assert len(set(begun) & set(again)) <= BATCH * CONCURRENCY  # only the mini-batches in flight ran twice


def test_a_stopped_server_hands_its_job_back_and_the_next_start_resumes_it(work: Path) -> None:
    state_dir = str(work.parent / "state")
    first = server(work, "first", "--state-dir", state_dir).start()
    try:
        job_id = submit(first, work)
        wait_for(first, job_id, lambda s: s["rows_done"] >= 100)
    finally:
        assert first.stop() == 0, first.log()  # SIGTERM: a clean stop
    with sqlite3.connect(Path(state_dir) / "jobs.db") as conn:
        assert conn.execute("SELECT state, attempts, holder FROM batch_jobs").fetchall() == [("queued", 1, None)]
    second = server(work, "second", "--state-dir", state_dir).start()
    try:
        done = wait_for(second, job_id, finished)
        assert (done["state"], done["attempts"], done["rows_done"]) == ("succeeded", 2, ROWS)
    finally:
        assert second.stop() == 0, second.log()
    assert_every_row_once(work)


@pytest.fixture
def replicas(work: Path, postgres_dsn: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = server(work, "a", "--job-store", postgres_dsn)
    b = server(work, "b", "--job-store", postgres_dsn)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_two_replicas_answer_for_each_others_job_and_run_it_once(replicas, work: Path) -> None:
    a, b = replicas
    job_id = submit(a, work)
    seen = status(b, job_id)  # at once, from the other replica
    assert (seen["id"], seen["model"], seen["output"]) == (job_id, "counting", str(work / "out"))
    busy = httpx.post(f"{b.url}/v2/batch/jobs", timeout=10, json={
        "model": "counting", "input": str(work / "in.csv"), "output": str(work / "out")})
    assert busy.status_code == 409, busy.text  # the other replica knows the folder is being written
    assert job_id in busy.json()["error"]
    done = wait_for(b, job_id, finished)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 1
    ran = executions(work, "a", "b")
    assert ran == Counter(range(ROWS)), "every row ran once, on one replica"
    assert_every_row_once(work)
    assert status(a, job_id) == done

    slow = submit(b, work, "slow")
    wait_for(a, slow, lambda s: s["rows_done"] >= 20)
    cancelled = httpx.delete(f"{a.url}/v2/batch/jobs/{slow}", timeout=10)  # cancelled from the other replica
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    time.sleep(1.5)  # the running replica learns it at its next progress write
    stopped_at = sum(executions(work, "a", "b").values())
    time.sleep(1.0)
    assert sum(executions(work, "a", "b").values()) == stopped_at < 2 * ROWS
    assert status(b, slow)["state"] == "cancelled"
    again = httpx.delete(f"{b.url}/v2/batch/jobs/{slow}", timeout=10)
    assert (again.status_code, again.json()["state"]) == (200, "cancelled")  # a DELETE may be repeated
    finished_job = httpx.delete(f"{b.url}/v2/batch/jobs/{job_id}", timeout=10)
    assert finished_job.status_code == 409
    assert "is succeeded; only a queued or running job can be cancelled" in finished_job.json()["error"]


def test_a_replica_killed_mid_job_is_taken_over_and_the_job_resumes(replicas, work: Path) -> None:
    a, b = replicas
    job_id = submit(a, work)
    wait_for(b, job_id, lambda s: s["state"] == "running" and s["rows_done"] >= 60)
    runner, other = (a, b) if executions(work, "a") else (b, a)
    runner.kill()
    done = wait_for(other, job_id, finished)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["summary"]["resumed_batches"] >= 60 // BATCH
    assert_every_row_once(work)
    name, other_name = ("a", "b") if runner is a else ("b", "a")
    begun, rest = executions(work, name), executions(work, other_name)
    assert set(begun) | set(rest) == set(range(ROWS))
    assert len(set(begun) & set(rest)) <= BATCH * CONCURRENCY
