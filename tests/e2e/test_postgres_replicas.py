"""Several ``inferd serve`` replicas on one PostgreSQL job store, with real processes and real faults: a replica
killed with SIGKILL mid-job (its jobs are taken over once their lease runs out, every job ends succeeded once),
PostgreSQL restarted under running replicas (503 with Retry-After meanwhile, nothing accepted lost, the replicas
reconnect), and a database of an older schema (a clear refusal, nothing changed)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from fakes import write_model
from inferd.jobs.postgres_schema import SCHEMA_VERSION
from postgres_cluster import PostgresCluster, find_bin_dir
from server_process import ServerProcess

pytestmark = pytest.mark.slow

COUNTING = """
import os
import time

import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1, 1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1, 1]}]

    def predict(self, inputs):
        with open(os.environ["EXECUTIONS"], "a") as log:  # one line per row begun: the test counts executions
            log.writelines(f"{int(v)}\\n" for v in inputs["x"].ravel())
        time.sleep(float(os.environ.get("JOB_S", "0.05")))
        return {"y": inputs["x"] * 10}
"""
LEASE_S = 2.0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_model(tmp_path / "models", "counting", COUNTING)
    return tmp_path / "models"


def replica(repo: Path, tmp_path: Path, name: str, dsn: str, job_s: float = 0.05) -> ServerProcess:
    return ServerProcess(repo, tmp_path / f"{name}.log", ["--job-store", dsn],
                         env={"JOB_S": str(job_s), "EXECUTIONS": str(tmp_path / f"{name}.executions"),
                              "INFERD_JOB_LEASE_S": str(LEASE_S), "INFERD_ASYNC_RETRY_BACKOFF_S": "0.2"})


def body(i: int) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [i]}]}


def submit(server: ServerProcess, i: int) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/counting/infer-async", json=body(i),
                      headers={"Inference-Id": f"job-{i}"}, timeout=30)


def statuses(dsn: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT public_id, status, attempts FROM inferd_jobs").fetchall()
    return {public_id: (status, attempts) for public_id, status, attempts in rows}


def wait_all_succeeded(dsn: str, n: int, timeout: float = 90) -> dict[str, tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = statuses(dsn)
        if len(now) >= n and all(status == "succeeded" for status, _ in now.values()):
            return now
        time.sleep(0.2)
    raise AssertionError(f"not all succeeded: {Counter(s for s, _ in statuses(dsn).values())}")


def executions(path: Path) -> Counter[int]:
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


@pytest.fixture
def replicas(repo: Path, tmp_path: Path, postgres_dsn: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a, b = replica(repo, tmp_path, "a", postgres_dsn, 0.5), replica(repo, tmp_path, "b", postgres_dsn, 0.5)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_a_replica_killed_mid_job_leaves_every_job_succeeded_exactly_once(replicas, postgres_dsn, tmp_path):
    a, b = replicas
    n = 24
    for i in range(n):
        assert submit(a if i % 2 else b, i).status_code == 202
    deadline = time.monotonic() + 30
    while not executions(tmp_path / "a.executions") and time.monotonic() < deadline:
        time.sleep(0.01)
    a.kill()  # mid-job (each takes 0.5 s), with more claimed ahead
    done = wait_all_succeeded(postgres_dsn, n)
    assert len(done) == n
    ran_a, ran_b = executions(tmp_path / "a.executions"), executions(tmp_path / "b.executions")
    assert max(ran_a.values()) == 1  # no replica ran a job twice
    assert max(ran_b.values()) == 1
    assert set(ran_a) | set(ran_b) == set(range(n))
    taken_over = set(ran_a) & set(ran_b)  # begun (perhaps finished) on a before it died, run again on b
    assert all(done[f"job-{i}"][1] >= 2 for i in taken_over)
    assert any(attempts >= 2 for _, attempts in done.values()), (ran_a, ran_b, done)  # a's jobs were taken over
    for i in (0, n - 1):  # the results are the model's, stored once
        reply = httpx.get(f"{b.url}/v2/jobs/job-{i}/result", timeout=10)
        assert reply.status_code == 200
        assert reply.json()["outputs"][0]["data"] == [i * 10]


def test_postgres_restarted_under_running_replicas(repo, tmp_path):
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's binaries are not installed")
    cluster = PostgresCluster(bin_dir)  # a cluster of its own: the session's is not restarted under other tests
    cluster.init()
    cluster.start()
    dsn = cluster.new_database()
    a, b = replica(repo, tmp_path, "a", dsn), replica(repo, tmp_path, "b", dsn)
    try:
        a.start()
        b.start()
        for i in range(20):
            assert submit(a, i).status_code == 202
        cluster.stop()  # fast shutdown: every session is cut
        refused = submit(b, 100)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "cannot be reached" in refused.json()["error"]
        cluster.start()
        accepted = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the pool reconnects by itself
            accepted = submit(b, 100)
            if accepted.status_code == 202:
                break
            time.sleep(0.3)
        assert accepted is not None
        assert accepted.status_code == 202, accepted.text
        for i in range(101, 110):
            assert submit(a, i).status_code == 202
        done = wait_all_succeeded(dsn, 30)
        assert set(done) == {f"job-{i}" for i in [*range(20), *range(100, 110)]}
        assert httpx.get(f"{a.url}/v2/health/ready", timeout=5).status_code == 200
    finally:
        a.stop()
        b.stop()
        cluster.remove()


def test_a_database_of_an_older_schema_is_refused_untouched(repo, tmp_path, postgres_dsn):
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE inferd_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO inferd_schema VALUES (0)")
        conn.execute("CREATE TABLE inferd_jobs (id text PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO inferd_jobs VALUES ('old', 'kept')")
    server = replica(repo, tmp_path, "a", postgres_dsn)
    try:
        server.start()
        reply = submit(server, 1)
        assert reply.status_code == 503
        message = reply.json()["error"]
        assert f"schema 0, older than this inferd's {SCHEMA_VERSION}" in message, message
        assert "password" not in message
        assert "older than this inferd's" in server.log()
    finally:
        server.stop()
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT * FROM inferd_jobs").fetchall() == [("old", "kept")]
        assert conn.execute("SELECT version FROM inferd_schema").fetchall() == [(0,)]
