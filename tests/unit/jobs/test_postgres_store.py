"""What only a shared store has to do, on a real PostgreSQL: two stores (two servers) on one database take over
each other's jobs only when a lease runs out, deliver each callback from one of them, and refuse a schema they do
not know. The protocol's own tests run on PostgreSQL too (test_job_stores.py and the others, through ``store``)."""

import asyncio

import psycopg
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.jobs.postgres_store import SCHEMA_VERSION, PostgresJobStore, PostgresSchemaError
from inferd.jobs.store import CallbackAttempt, CallbackState, JobResult, JobStatus, Payload, StoreOpenError
from job_fakes import new_job
from server_process import free_port

RESULT = JobResult(Payload(2, inline=b"ok"))


@pytest.fixture
def two(postgres_dsn, run):
    """Two servers' stores on one database, with short leases (a beat every 0.1 s)."""
    first, second = PostgresJobStore(postgres_dsn, lease_s=0.3), PostgresJobStore(postgres_dsn, lease_s=0.3)
    run(first.open())
    run(second.open())
    yield first, second
    run(first.close())
    run(second.close())


def test_a_job_held_by_a_live_server_stays_its_own_and_a_dead_ones_is_taken_over(two, run):
    first, second = two
    run(first.submit(new_job("a"), 1.0))
    run(first.submit(new_job("b"), 1.0))
    (held,) = run(first.claim({"m": 1}, 2.0))
    (other,) = run(second.claim({"m": 5}, 2.0))  # SKIP LOCKED and the lease: only the job nobody holds
    assert (held.id, other.id) == ("a", "b")
    assert run(second.complete("b", other.attempts, RESULT, 2.5))
    run(asyncio.sleep(0.7))  # past the lease: the first store's beat has renewed it meanwhile
    assert run(second.claim({"m": 5}, 3.0)) == []
    assert run(second.queued_models()) == set()
    assert run(second.recover(3.0)) == 0  # a starting server leaves a live one's jobs alone
    run(first.close())  # as if killed: nobody renews the lease any more
    run(asyncio.sleep(0.5))
    assert run(second.queued_models()) == {"m"}
    (taken,) = run(second.claim({"m": 5}, 4.0))
    assert (taken.id, taken.attempts, taken.request_inline) == ("a", 2, b"{}")
    run(first.open())
    assert not run(first.complete("a", held.attempts, RESULT, 5.0))  # the dead run cannot store a result
    assert run(second.complete("a", taken.attempts, RESULT, 6.0))
    assert run(second.get("a")).status is JobStatus.SUCCEEDED


def test_each_callback_is_delivered_by_one_server(two, run):
    first, second = two
    run(first.submit(new_job("a", callback_url="http://127.0.0.1:1/cb"), 1.0))
    (job,) = run(first.claim({"m": 1}, 2.0))
    run(first.complete("a", job.attempts, RESULT, 3.0))
    assert [j.id for j in run(second.pending_callbacks())] == ["a"]
    assert run(first.claim_callback("a", 4.0)).callback_state is CallbackState.PENDING
    assert run(second.claim_callback("a", 4.0)) is None  # the first server delivers it
    assert run(second.pending_callbacks()) == []
    run(first.record_callback("a", CallbackAttempt(5.0, 500, "HTTP 500"), CallbackState.PENDING))
    run(asyncio.sleep(0.5))
    assert run(second.claim_callback("a", 6.0)) is None  # still held: its retries are the first server's
    run(first.close())  # died between two attempts
    run(asyncio.sleep(0.5))
    resumed = run(second.claim_callback("a", 7.0))
    assert resumed.callback_attempts == [CallbackAttempt(5.0, 500, "HTTP 500")]  # counted, not started over
    run(second.record_callback("a", CallbackAttempt(8.0, 200), CallbackState.DELIVERED))
    assert run(second.pending_callbacks()) == []
    run(first.open())


def test_a_database_of_a_newer_schema_is_refused(postgres_dsn, run):
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE inferd_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO inferd_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(PostgresSchemaError, match=f"schema {SCHEMA_VERSION + 1}, newer than this inferd's"):
        run(PostgresJobStore(postgres_dsn).open())
    with psycopg.connect(postgres_dsn) as conn:  # nothing was created beside it
        assert conn.execute("SELECT to_regclass('inferd_jobs')").fetchone() == (None,)


def test_tables_without_a_schema_version_are_refused(postgres_dsn, run):
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE inferd_jobs (id text)")
    with pytest.raises(PostgresSchemaError, match="no inferd_schema version"):
        run(PostgresJobStore(postgres_dsn).open())


def test_servers_opening_together_create_the_schema_once(postgres_dsn, run):
    stores = [PostgresJobStore(postgres_dsn) for _ in range(4)]

    async def open_all() -> None:
        await asyncio.gather(*(s.open() for s in stores))

    run(open_all())
    for store in stores:
        run(store.close())
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT version FROM inferd_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_a_database_that_cannot_be_reached_is_a_clear_open_error(run):
    with pytest.raises(StoreOpenError, match="cannot be opened") as caught:
        run(PostgresJobStore(f"postgresql://inferd:secret@127.0.0.1:{free_port()}/x", timeout_s=1).open())
    assert "secret" not in str(caught.value)


def test_outage_errors_are_unavailable_with_retry_after(run):
    store = PostgresJobStore(f"postgresql://inferd:secret@127.0.0.1:{free_port()}/x", timeout_s=0.5)

    async def without_open() -> None:  # a pool that never reaches the database, as during an outage
        from psycopg_pool import AsyncConnectionPool

        store._pool = AsyncConnectionPool(store.dsn, min_size=1, max_size=1, timeout=0.5, open=False)
        await store._pool.open(wait=False)
        try:
            await store.submit(new_job("a"), 1.0)
        finally:
            await store._pool.close()
            store._pool = None

    with pytest.raises(InferError) as caught:
        run(without_open())
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert caught.value.retry_after_s is not None
    assert "secret" not in caught.value.message  # the password is not in the message
