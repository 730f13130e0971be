"""The PostgreSQL store's batch jobs (:class:`~inferd.jobs.batch_store.BatchStore`), shared by every replica.

A claim takes the oldest queued job, or a running one whose lease ran out (its replica died or was cut off),
with ``FOR UPDATE SKIP LOCKED``, under this store's holder and lease (the store's heartbeat renews it with its
asynchronous jobs'). The journal in the output folder makes the new run resume the dead one's work."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from inferd.jobs.batch_store import BATCH_COLUMNS, BatchRecord, OutputBusyError, batch_from_row, dump

if TYPE_CHECKING:
    from psycopg import AsyncConnection

NOW = "extract(epoch from clock_timestamp())"
BATCH_TABLE = """
CREATE TABLE inferd_batch_jobs (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    model text NOT NULL,
    input text NOT NULL,
    output text NOT NULL,
    options jsonb NOT NULL,
    state text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    progress jsonb,
    summary jsonb,
    error text,
    holder text,
    lease_until double precision
);
CREATE UNIQUE INDEX inferd_batch_jobs_writing ON inferd_batch_jobs (output) WHERE state IN ('queued', 'running');
"""
"""Schema 2's table: created with the schema in a new database, by migration in a schema-1 one."""
RENEW = (f"UPDATE inferd_batch_jobs SET lease_until = {NOW} + %(lease)s "
         "WHERE holder = %(me)s AND state = 'running'")
"""What the store's heartbeat runs to keep this server's batch job held."""
_COLUMNS = ", ".join(f"{c}::text" if c in ("options", "progress", "summary") else c
                     for c in BATCH_COLUMNS.split(", "))
_ACTIVE = "state IN ('queued', 'running')"
_MINE = "id = %(id)s AND state = 'running' AND attempts = %(attempt)s AND holder = %(me)s"
CANCELLED = "cancelled on request; the output holds the rows written before"


class PostgresBatchMethods:
    """The batch part of :class:`~inferd.jobs.postgres_store.PostgresJobStore` (which provides these)."""

    def _me(self, **params: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _connection(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection[Any]]:
        raise NotImplementedError

    async def batch_submit(self, job: BatchRecord, now: float) -> None:
        import psycopg

        try:
            async with self._connection() as conn:
                await conn.execute(
                    "INSERT INTO inferd_batch_jobs (id, model, input, output, options, state, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s::jsonb, 'queued', %s, %s)",
                    (job.id, job.model, job.input, job.output, dump(job.options), now, now))
        except psycopg.errors.UniqueViolation:  # the partial index: an active job writes there
            async with self._connection() as conn:
                row = await (await conn.execute(
                    f"SELECT id FROM inferd_batch_jobs WHERE output = %s AND {_ACTIVE}", (job.output,))).fetchone()
            raise OutputBusyError(row[0] if row else "?", job.output) from None
        job.state, job.created_at, job.updated_at = "queued", now, now

    async def batch_get(self, job_id: str) -> BatchRecord | None:
        async with self._connection() as conn:
            row = await (await conn.execute(f"SELECT {_COLUMNS} FROM inferd_batch_jobs WHERE id = %s",
                                            (job_id,))).fetchone()
        return None if row is None else batch_from_row(row)

    async def batch_list(self, limit: int = 100) -> list[BatchRecord]:
        async with self._connection() as conn:
            rows = await (await conn.execute(f"SELECT {_COLUMNS} FROM inferd_batch_jobs ORDER BY seq DESC LIMIT %s",
                                             (limit,))).fetchall()
        return [batch_from_row(r) for r in rows]

    async def batch_claim(self, now: float) -> BatchRecord | None:
        async with self._connection() as conn:
            row = await (await conn.execute(
                "UPDATE inferd_batch_jobs SET state = 'running', attempts = attempts + 1, updated_at = %(now)s, "
                f"holder = %(me)s, lease_until = {NOW} + %(lease)s WHERE seq = (SELECT seq FROM inferd_batch_jobs "
                f"WHERE state = 'queued' OR (state = 'running' AND lease_until < {NOW}) "
                f"ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}", self._me(now=now))).fetchone()
        return None if row is None else batch_from_row(row)

    async def batch_update(self, job_id: str, attempt: int, progress: dict[str, Any], now: float) -> bool:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"UPDATE inferd_batch_jobs SET progress = %(progress)s::jsonb, updated_at = %(now)s WHERE {_MINE}",
                self._me(id=job_id, attempt=attempt, progress=dump(progress), now=now))
            return cursor.rowcount > 0

    async def batch_end(self, job_id: str, attempt: int, state: str, now: float, *,
                        progress: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                        error: str | None = None) -> bool:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "UPDATE inferd_batch_jobs SET state = %(state)s, progress = COALESCE(%(progress)s::jsonb, progress), "
                "summary = COALESCE(%(summary)s::jsonb, summary), error = %(error)s, updated_at = %(now)s, "
                "holder = NULL, lease_until = NULL WHERE " + _MINE,
                self._me(id=job_id, attempt=attempt, state=state, progress=dump(progress), summary=dump(summary),
                         error=error, now=now))
            return cursor.rowcount > 0

    async def batch_cancel(self, job_id: str, now: float) -> BatchRecord | None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE inferd_batch_jobs SET state = 'cancelled', updated_at = %s, holder = NULL, lease_until = NULL, "
                f"error = %s WHERE id = %s AND {_ACTIVE}", (now, CANCELLED, job_id))
            row = await (await conn.execute(f"SELECT {_COLUMNS} FROM inferd_batch_jobs WHERE id = %s",
                                            (job_id,))).fetchone()
        return None if row is None else batch_from_row(row)

