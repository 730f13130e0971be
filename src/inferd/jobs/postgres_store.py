"""The job store that several servers share: PostgreSQL, through psycopg 3's asynchronous connection pool.

Every write is one transaction that returns once committed (``synchronous_commit`` as the server has it; on by
default, so a 202 means the job is in the server's fsynced WAL). PostgreSQL groups concurrent commits itself,
so the pool's connections play the part of SQLite's writer thread.

Leases. A claim marks a job ``running`` under this store's ``holder`` (host, process and a random part) with a
lease that this store renews every third of ``lease_s`` while the process lives. Jobs whose lease ran out (their
server was killed or cut off) are claimed again by any server, with one more attempt, so a job held by a dead
replica is taken over; the stale attempt cannot store a result (writes are conditional on the attempt number).
Claims take rows with ``FOR UPDATE SKIP LOCKED``: two servers never claim the same job, nor wait for each other.
Leases are measured on the database's clock, so servers whose clocks differ still agree on them.

Callbacks are claimed the same way (``callback_holder`` with its own lease), so each final status is delivered by
one server however many share the queue.

Payloads. Every request and result body is kept in the database (``bytea``): servers on several machines cannot
read one another's payload files, and a shared folder would be a second thing to keep consistent. The price: a
body is held in memory while it is stored, and PostgreSQL caps a ``bytea`` value at 1 GB.

Schema. ``inferd_schema`` holds its version. A database of a newer inferd, or of an older one this inferd has no
migration for, is refused with :class:`PostgresSchemaError` naming both versions; nothing is changed.

An outage (the database restarting, the network gone) makes each call raise UNAVAILABLE with ``Retry-After``:
submissions get 503 meanwhile, the worker retries, and the pool reconnects on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from inferd.errors import ErrorCode, InferError
from inferd.jobs.postgres_batch import RENEW, PostgresBatchMethods
from inferd.jobs.postgres_schema import SCHEMA_VERSION, PostgresSchemaError, migrate, safe_dsn
from inferd.jobs.store import (
    JOB_COLUMNS,
    CallbackAttempt,
    CallbackState,
    Job,
    JobResult,
    JobStatus,
    NewJob,
    StoreOpenError,
    job_from_row,
)

__all__ = ["SCHEMA_VERSION", "PostgresJobStore", "PostgresSchemaError"]

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2
"""Retry-After of a call refused while the database cannot be reached."""
NOW = "extract(epoch from clock_timestamp())"
"""The database's clock, in seconds since the epoch: what leases are measured on."""

_FINISHED = ("succeeded", "failed", "cancelled")
_PENDING_CALLBACK = "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END"
_DUE = f"((status = 'queued' AND not_before <= %(now)s) OR (status = 'running' AND lease_until < {NOW}))"
"""Claimable: queued and due, or running under a lease that ran out."""


class PostgresJobStore(PostgresBatchMethods):
    """:class:`~inferd.jobs.store.JobStore` over a PostgreSQL database (``postgresql://user@host/db``), with the
    batch jobs' table (:mod:`inferd.jobs.postgres_batch`)."""

    payloads_inline = True

    def __init__(self, dsn: str, *, lease_s: float = 30.0, pool_size: int = 32, timeout_s: float = 5.0) -> None:
        """``pool_size``: connections at most; PostgreSQL flushes the WAL once for the commits that arrive together,
        so more connections in flight mean more submissions per fsync (10 gave a third of 32's accepts/s).
        ``timeout_s``: longest wait for a connection before a call is refused as UNAVAILABLE."""
        self.dsn = dsn
        self.lease_s = lease_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """Who holds this server's leases: unique per store opened, so a restarted server never renews the leases
        of its previous life (those run out and their jobs are taken over as any dead server's)."""
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._pool: AsyncConnectionPool[Any] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn, min_size=1, max_size=self._pool_size, timeout=self._timeout_s, open=False,
            kwargs={"connect_timeout": max(int(self._timeout_s), 1)},
            name="inferd-jobs")
        try:
            await pool.open(wait=True, timeout=self._timeout_s)
            async with pool.connection() as conn:
                await migrate(conn, self.dsn)
        except PostgresSchemaError:
            await pool.close()
            raise
        except Exception as exc:
            await pool.close()
            raise StoreOpenError(f"the job store {safe_dsn(self.dsn)} cannot be opened: {exc}") from exc
        self._pool = pool
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="inferd-jobs-leases")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _renew_leases(self) -> None:
        """Keep this server's jobs, batch job and callbacks held while it lives (a failure is tried at the next
        beat)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._execute(
                    f"UPDATE inferd_jobs SET lease_until = {NOW} + %(lease)s "
                    "WHERE holder = %(me)s AND status = 'running'", self._me())
                await self._execute(
                    f"UPDATE inferd_jobs SET callback_lease_until = {NOW} + %(lease)s "
                    "WHERE callback_holder = %(me)s AND callback_state = 'pending'", self._me())
                await self._execute(RENEW, self._me())
            except InferError as exc:
                log.warning("renewing the leases of this server's jobs failed: %s", exc.message)

    def _me(self, **params: Any) -> dict[str, Any]:
        return {"me": self.holder, "lease": self.lease_s, **params}

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in a transaction committed on exit; an outage becomes UNAVAILABLE."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise RuntimeError("the job store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise InferError(ErrorCode.UNAVAILABLE, f"the job store {safe_dsn(self.dsn)} cannot be reached: {exc}",
                             retry_after_s=RETRY_AFTER_S) from exc

    async def _execute(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> int:
        async with self._connection() as conn:
            return (await conn.execute(sql, params)).rowcount

    async def _fetch(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    # -- submissions and reads -------------------------------------------------------------------
    async def submit(self, job: NewJob, now: float) -> tuple[Job, bool]:
        body = job.body
        owner, public_id = job.owner or "", job.public_id or job.id
        async with self._connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO inferd_jobs (id, model, version, status, created_at, updated_at, digest, header_length, "
                "input_location, request_size, request_inline, request_file, callback_url, owner, public_id) "
                "VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (owner, public_id) DO NOTHING",
                (job.id, job.model, job.version, now, now, job.digest, job.header_length, job.input_location,
                 body.size if body else None, body.inline if body else None, body.file if body else None,
                 job.callback_url, owner, public_id))
            if cursor.rowcount > 0:
                return Job(job.id, job.model, job.version, JobStatus.QUEUED, now, now, digest=job.digest,
                           header_length=job.header_length, input_location=job.input_location,
                           request_size=body.size if body else None, request_file=body.file if body else None,
                           callback_url=job.callback_url, owner=job.owner, public_id=public_id), True
            (existing,) = await _find(conn, public_id, owner)
            return existing, False

    async def get(self, job_id: str) -> Job | None:
        async with self._connection() as conn:
            return await _get(conn, job_id)

    async def find(self, public_id: str, owner: str | None = None) -> list[Job]:
        async with self._connection() as conn:
            return await _find(conn, public_id, owner)

    async def list_jobs(self, *, status: JobStatus | None = None, model: str | None = None,
                        limit: int = 100, owner: str | None = None) -> list[Job]:
        where, params = [], []
        for column, value in (("owner", owner), ("status", status and status.value), ("model", model)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetch(f"SELECT {JOB_COLUMNS} FROM inferd_jobs {clause} ORDER BY seq DESC LIMIT %s",
                                 (*params, limit))
        return [job_from_row(r) for r in rows]

    async def inline(self, job_id: str, which: Literal["request", "result"]) -> bytes | None:
        column = "request_inline" if which == "request" else "result_inline"
        rows = await self._fetch(f"SELECT {column} FROM inferd_jobs WHERE id = %s", (job_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    async def queued_models(self) -> set[str]:
        rows = await self._fetch("SELECT DISTINCT model FROM inferd_jobs WHERE status = 'queued' OR "
                                 f"(status = 'running' AND lease_until < {NOW})")
        return {r[0] for r in rows}

    async def count_by_status(self) -> dict[tuple[str, str, str], int]:
        rows = await self._fetch("SELECT model, COALESCE(version, ''), status, COUNT(*) FROM inferd_jobs "
                                 "GROUP BY model, version, status")
        return {(model, version, status): count for model, version, status, count in rows}

    # -- the worker's writes ---------------------------------------------------------------------
    async def claim(self, slots: Mapping[str, int], now: float) -> list[Job]:
        wanted = {m: n for m, n in slots.items() if n > 0}
        if not wanted:
            return []
        claimed: list[tuple[int, Job]] = []
        async with self._connection() as conn:
            for model, count in wanted.items():
                cursor = await conn.execute(
                    "UPDATE inferd_jobs SET status = 'running', attempts = attempts + 1, started_at = %(now)s, "
                    f"updated_at = %(now)s, holder = %(me)s, lease_until = {NOW} + %(lease)s "
                    f"WHERE seq IN (SELECT seq FROM inferd_jobs WHERE model = %(model)s AND {_DUE} "
                    "ORDER BY seq LIMIT %(count)s FOR UPDATE SKIP LOCKED) "
                    f"RETURNING seq, {JOB_COLUMNS}, request_inline",
                    self._me(now=now, model=model, count=count))
                for row in await cursor.fetchall():
                    job = job_from_row(row[1:-1])
                    job.request_inline = bytes(row[-1]) if row[-1] is not None else None
                    claimed.append((row[0], job))
        return [job for _, job in sorted(claimed, key=lambda pair: pair[0])]

    async def complete(self, job_id: str, attempt: int, result: JobResult, now: float) -> bool:
        body = result.body
        return await self._execute(
            "UPDATE inferd_jobs SET status = 'succeeded', finished_at = %s, updated_at = %s, error_code = NULL, "
            "error = NULL, result_size = %s, result_inline = %s, result_file = %s, result_header_length = %s, "
            f"holder = NULL, lease_until = NULL, {_PENDING_CALLBACK} "
            "WHERE id = %s AND status = 'running' AND attempts = %s",
            (now, now, body.size, body.inline, body.file, result.header_length, job_id, attempt)) > 0

    async def fail(self, job_id: str, attempt: int, code: str, message: str, retry_at: float | None,
                   now: float) -> bool:
        if retry_at is not None:
            sql = ("UPDATE inferd_jobs SET status = 'queued', not_before = %s, updated_at = %s, error_code = %s, "
                   "error = %s, holder = NULL, lease_until = NULL "
                   "WHERE id = %s AND status = 'running' AND attempts = %s")
            params: tuple[Any, ...] = (retry_at, now, code, message, job_id, attempt)
        else:
            sql = ("UPDATE inferd_jobs SET status = 'failed', finished_at = %s, updated_at = %s, error_code = %s, "
                   f"error = %s, holder = NULL, lease_until = NULL, {_PENDING_CALLBACK} "
                   "WHERE id = %s AND status = 'running' AND attempts = %s")
            params = (now, now, code, message, job_id, attempt)
        return await self._execute(sql, params) > 0

    async def release(self, job_id: str, attempt: int, now: float) -> bool:
        return await self._execute(
            "UPDATE inferd_jobs SET status = 'queued', attempts = attempts - 1, updated_at = %s, holder = NULL, "
            "lease_until = NULL WHERE id = %s AND status = 'running' AND attempts = %s", (now, job_id, attempt)) > 0

    async def cancel(self, job_id: str, now: float) -> Job | None:
        async with self._connection() as conn:
            await conn.execute(
                f"UPDATE inferd_jobs SET status = 'cancelled', finished_at = %s, updated_at = %s, {_PENDING_CALLBACK} "
                "WHERE id = %s AND status = 'queued'", (now, now, job_id))
            return await _get(conn, job_id)

    async def recover(self, now: float) -> int:
        """Jobs this store holds (none at a start) or whose lease ran out go back to the queue; jobs other live
        servers run are theirs."""
        return await self._execute(
            "UPDATE inferd_jobs SET status = 'queued', updated_at = %(now)s, not_before = 0, holder = NULL, "
            f"lease_until = NULL WHERE status = 'running' AND (holder = %(me)s OR lease_until < {NOW})",
            self._me(now=now))

    # -- callbacks and retention -----------------------------------------------------------------
    async def pending_callbacks(self) -> list[Job]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM inferd_jobs WHERE callback_state = 'pending' AND (callback_holder IS NULL "
                f"OR callback_holder = %(me)s OR callback_lease_until < {NOW}) ORDER BY seq", self._me())
            return [await _with_callbacks(conn, job_from_row(r)) for r in await cursor.fetchall()]

    async def claim_callback(self, job_id: str, now: float) -> Job | None:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"UPDATE inferd_jobs SET callback_holder = %(me)s, callback_lease_until = {NOW} + %(lease)s "
                "WHERE id = %(id)s AND callback_state = 'pending' AND (callback_holder IS NULL OR "
                f"callback_holder = %(me)s OR callback_lease_until < {NOW}) RETURNING {JOB_COLUMNS}",
                self._me(id=job_id))
            row = await cursor.fetchone()
            return None if row is None else await _with_callbacks(conn, job_from_row(row))

    async def record_callback(self, job_id: str, attempt: CallbackAttempt, state: CallbackState) -> None:
        async with self._connection() as conn:
            await conn.execute("INSERT INTO inferd_callback_attempts (job_id, at, status_code, error) "
                               "VALUES (%s, %s, %s, %s)", (job_id, attempt.at, attempt.status_code, attempt.error))
            done = state is not CallbackState.PENDING
            await conn.execute(
                "UPDATE inferd_jobs SET callback_state = %s, "
                "callback_holder = CASE WHEN %s THEN NULL ELSE callback_holder END WHERE id = %s",
                (state.value, done, job_id))

    async def expire(self, finished_before: float, now: float) -> list[str]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT request_file, result_file FROM inferd_jobs WHERE finished_at < %s AND status = ANY(%s) "
                "FOR UPDATE SKIP LOCKED", (finished_before, list(_FINISHED)))
            names = [name for row in await cursor.fetchall() for name in row if name]
            await conn.execute(
                "UPDATE inferd_jobs SET status = 'expired', updated_at = %s, request_inline = NULL, "
                "request_file = NULL, result_inline = NULL, result_file = NULL, result_size = NULL "
                "WHERE finished_at < %s AND status = ANY(%s)", (now, finished_before, list(_FINISHED)))
            await conn.execute(
                "DELETE FROM inferd_callback_attempts WHERE job_id IN "
                "(SELECT id FROM inferd_jobs WHERE status = 'expired' AND updated_at < %s)", (finished_before,))
            await conn.execute("DELETE FROM inferd_jobs WHERE status = 'expired' AND updated_at < %s",
                               (finished_before,))
            await conn.execute("DELETE FROM inferd_batch_jobs WHERE state = ANY(%s) AND updated_at < %s",
                               (list(_FINISHED), finished_before))
            return names

    async def payload_files(self) -> set[str]:
        rows = await self._fetch("SELECT request_file, result_file FROM inferd_jobs "
                                 "WHERE request_file IS NOT NULL OR result_file IS NOT NULL")
        return {name for row in rows for name in row if name}


async def _get(conn: AsyncConnection[Any], job_id: str) -> Job | None:
    row = await (await conn.execute(f"SELECT {JOB_COLUMNS} FROM inferd_jobs WHERE id = %s", (job_id,))).fetchone()
    if row is None:
        return None
    job = job_from_row(row)
    return await _with_callbacks(conn, job) if job.callback_url else job


async def _find(conn: AsyncConnection[Any], public_id: str, owner: str | None) -> list[Job]:
    sql = f"SELECT {JOB_COLUMNS} FROM inferd_jobs WHERE public_id = %s"
    params: tuple[str, ...] = (public_id,)
    if owner is not None:
        sql, params = sql + " AND owner = %s", (public_id, owner)
    rows = await (await conn.execute(sql + " ORDER BY seq", params)).fetchall()
    return [await _with_callbacks(conn, job) if job.callback_url else job for job in map(job_from_row, rows)]


async def _with_callbacks(conn: AsyncConnection[Any], job: Job) -> Job:
    cursor = await conn.execute("SELECT at, status_code, error FROM inferd_callback_attempts WHERE job_id = %s "
                                "ORDER BY seq", (job.id,))
    job.callback_attempts = [CallbackAttempt(at, code, error) for at, code, error in await cursor.fetchall()]
    return job
