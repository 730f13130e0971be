"""The batch part of the job stores on real databases (``store``: SQLite, then PostgreSQL): durable records, the
one-active-job-per-output rule, claims one at a time, writes conditional on the run, cancellation, a dead
server's job taken over; and the schema 1 → 2 migration of each store."""

import asyncio
import sqlite3

import psycopg
import pytest

from inferd.jobs.batch_store import BatchRecord, OutputBusyError
from inferd.jobs.postgres_store import PostgresJobStore
from inferd.jobs.sqlite_store import SCHEMA_VERSION, SqliteJobStore
from job_fakes import new_job


def record(job_id: str, output: str = "/out", model: str = "m") -> BatchRecord:
    return BatchRecord(job_id, model, "/in.csv", output, {"batch_size": 8, "mapping": {"input": "a,b"}})


def reopened(store):
    """A second store on the same database, as the next server (SQLite) or another replica (PostgreSQL) opens."""
    return SqliteJobStore(store.folder) if isinstance(store, SqliteJobStore) else PostgresJobStore(store.dsn)


def test_a_record_is_durable_and_listed_newest_first(store, run):
    run(store.batch_submit(record("a", "/out/a"), 10.0))
    run(store.batch_submit(record("b", "/out/b"), 11.0))
    other = reopened(store)
    run(store.close())  # what was submitted is in the database, not in the first store's memory
    run(other.open())
    try:
        found = run(other.batch_get("a"))
        assert (found.state, found.created_at, found.attempts, found.options) == (
            "queued", 10.0, 0, {"batch_size": 8, "mapping": {"input": "a,b"}})
        assert [r.id for r in run(other.batch_list())] == ["b", "a"]
        assert [r.id for r in run(other.batch_list(limit=1))] == ["b"]
        assert run(other.batch_get("nobody")) is None
        assert found.status()["created_at"] == "1970-01-01T00:00:10.000Z"
    finally:
        run(other.close())
        run(store.open())  # for the fixture's close


def test_one_active_job_per_output(store, run):
    run(store.batch_submit(record("a"), 1.0))
    with pytest.raises(OutputBusyError, match="batch job a is already writing to /out"):
        run(store.batch_submit(record("b"), 2.0))
    assert run(store.batch_get("b")) is None
    claimed = run(store.batch_claim(3.0))
    with pytest.raises(OutputBusyError):  # running counts as writing too
        run(store.batch_submit(record("b"), 4.0))
    assert run(store.batch_end("a", claimed.attempts, "succeeded", 5.0, summary={"rows_out": 3}))
    run(store.batch_submit(record("c"), 6.0))  # finished: the folder is free again (a rerun resumes its journal)
    assert run(store.batch_get("c")).state == "queued"


def test_claims_take_the_oldest_job_once_and_writes_need_the_same_run(store, run):
    run(store.batch_submit(record("a", "/out/a"), 1.0))
    run(store.batch_submit(record("b", "/out/b"), 2.0))
    first = run(store.batch_claim(3.0))
    assert (first.id, first.state, first.attempts) == ("a", "running", 1)
    second = run(store.batch_claim(3.5))
    assert second.id == "b"  # the running one stays this store's
    assert run(store.batch_claim(4.0)) is None
    assert run(store.batch_update("a", 1, {"rows_done": 5}, 5.0))
    assert not run(store.batch_update("a", 2, {"rows_done": 6}, 5.0))  # another run's attempt number
    assert run(store.batch_get("a")).status()["rows_done"] == 5
    assert run(store.batch_end("a", 1, "failed", 6.0, progress={"rows_done": 7}, error="boom"))
    assert not run(store.batch_end("a", 1, "succeeded", 7.0))  # ended: nothing more changes it
    ended = run(store.batch_get("a"))
    assert (ended.state, ended.error, ended.progress) == ("failed", "boom", {"rows_done": 7})


def test_cancel_stops_a_queued_or_running_job_and_tells_its_run(store, run):
    run(store.batch_submit(record("a", "/out/a"), 1.0))
    run(store.batch_submit(record("b", "/out/b"), 2.0))
    claimed = run(store.batch_claim(3.0))
    cancelled = run(store.batch_cancel("a", 4.0))
    assert cancelled.state == "cancelled"
    assert not run(store.batch_update("a", claimed.attempts, {"rows_done": 1}, 5.0))  # the run learns and stops
    assert not run(store.batch_end("a", claimed.attempts, "succeeded", 5.0))
    assert run(store.batch_cancel("b", 6.0)).state == "cancelled"
    assert run(store.batch_claim(7.0)) is None
    assert run(store.batch_cancel("a", 8.0)).state == "cancelled"  # again: unchanged (a repeated DELETE)
    assert run(store.batch_cancel("nobody", 8.0)) is None


def test_a_stopping_server_hands_its_job_back(store, run):
    run(store.batch_submit(record("a"), 1.0))
    claimed = run(store.batch_claim(2.0))
    assert run(store.batch_end("a", claimed.attempts, "queued", 3.0, progress={"rows_done": 4}))
    again = run(store.batch_claim(4.0))
    assert (again.id, again.attempts, again.progress) == ("a", 2, {"rows_done": 4})


def test_the_next_sqlite_server_takes_over_a_job_the_killed_one_was_running(sqlite_store, run):
    run(sqlite_store.batch_submit(record("a"), 1.0))
    dead = run(sqlite_store.batch_claim(2.0))
    run(sqlite_store.close())  # killed: the job stays running under the old holder
    run(sqlite_store.open())  # the next server on the folder
    taken = run(sqlite_store.batch_claim(3.0))
    assert (taken.id, taken.attempts) == ("a", 2)
    assert not run(sqlite_store.batch_update("a", dead.attempts, {}, 4.0))
    assert run(sqlite_store.batch_update("a", taken.attempts, {}, 4.0))


def test_a_postgresql_replica_takes_over_only_when_the_lease_ran_out(postgres_dsn, run):
    first, second = PostgresJobStore(postgres_dsn, lease_s=0.3), PostgresJobStore(postgres_dsn, lease_s=0.3)
    run(first.open())
    run(second.open())
    try:
        run(first.batch_submit(record("a"), 1.0))
        held = run(first.batch_claim(2.0))
        run(asyncio.sleep(0.7))  # past the lease: the first store's beat has renewed it
        assert run(second.batch_claim(3.0)) is None
        assert run(second.batch_get("a")).state == "running"  # every replica sees it
        run(first.close())  # killed: nobody renews the lease
        run(asyncio.sleep(0.5))
        taken = run(second.batch_claim(4.0))
        assert (taken.id, taken.attempts) == ("a", 2)
        run(first.open())
        assert not run(first.batch_update("a", held.attempts, {}, 5.0))  # the dead run stores nothing
        assert run(second.batch_end("a", taken.attempts, "succeeded", 6.0))
    finally:
        run(first.close())
        run(second.close())


def test_a_schema_1_sqlite_store_gets_the_batch_table(tmp_path, run):
    folder = tmp_path / "state"
    store = SqliteJobStore(folder)
    run(store.open())
    run(store.submit(new_job("kept"), 1.0))
    run(store.close())
    with sqlite3.connect(folder / "jobs.db") as conn:  # as schema 1 was: no batch table
        conn.execute("DROP TABLE batch_jobs")
        conn.execute("PRAGMA user_version = 1")
    run(store.open())
    try:
        assert run(store.get("kept")) is not None
        run(store.batch_submit(record("a"), 2.0))
        assert run(store.batch_get("a")).state == "queued"
    finally:
        run(store.close())
    with sqlite3.connect(folder / "jobs.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (2,)


def test_a_schema_1_postgresql_database_is_migrated(postgres_dsn, run):
    from inferd.jobs.postgres_schema import SCHEMA_VERSION as PG_VERSION

    store = PostgresJobStore(postgres_dsn)
    run(store.open())
    run(store.submit(new_job("kept"), 1.0))
    run(store.close())
    with psycopg.connect(postgres_dsn) as conn:  # as schema 1 was: no batch table
        conn.execute("DROP TABLE inferd_batch_jobs")
        conn.execute("UPDATE inferd_schema SET version = 1")
    run(store.open())
    try:
        assert run(store.get("kept")) is not None
        run(store.batch_submit(record("a"), 2.0))
        assert run(store.batch_get("a")).state == "queued"
    finally:
        run(store.close())
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT version FROM inferd_schema").fetchall() == [(PG_VERSION,)] == [(2,)]


def test_retention_deletes_the_records_of_jobs_that_ended_long_ago(store, run):
    for name, at in (("old", 1.0), ("recent", 50.0), ("waiting", 2.0)):
        run(store.batch_submit(record(name, f"/out/{name}"), at))
    for at in (1.5, 50.5):
        claimed = run(store.batch_claim(at))
        run(store.batch_end(claimed.id, claimed.attempts, "succeeded", at))
    assert {r.id for r in run(store.batch_list())} == {"old", "recent", "waiting"}
    run(store.expire(finished_before=10.0, now=60.0))
    assert {r.id for r in run(store.batch_list())} == {"recent", "waiting"}  # a queued job is never expired
