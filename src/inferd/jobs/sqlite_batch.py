"""The SQLite store's batch jobs (:class:`~inferd.jobs.batch_store.BatchStore`): a table beside the
asynchronous jobs, written through the same writer thread (one commit, fsynced, before the 202).

One server owns a SQLite store (its lock file), so a job left ``running`` by a store opened earlier (a server
that was killed) is claimable at once: its holder is not the current one."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from inferd.jobs.batch_store import BATCH_COLUMNS, BatchRecord, OutputBusyError, batch_from_row, dump

T = TypeVar("T")

BATCH_TABLE = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    summary TEXT,
    error TEXT,
    holder TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS batch_jobs_writing ON batch_jobs (output) WHERE state IN ('queued', 'running');
"""
"""Schema 2's table (schema 1 stores get it by migration). The unique index is the output check: one active job
per output folder."""

_ACTIVE = "state IN ('queued', 'running')"
CANCELLED = "cancelled on request; the output holds the rows written before"


class SqliteBatchMethods:
    """The batch part of :class:`~inferd.jobs.sqlite_store.SqliteJobStore` (which provides the two methods)."""

    batch_holder: str = ""
    """Who runs the jobs this store claimed: a new one each time the store opens (:meth:`new_batch_holder`)."""
    batch_takes_over: bool = True
    """Claim running jobs of other holders (they are dead: one server per store). False for the workers of one
    ``--workers N`` supervisor, whose siblings are alive: the supervisor queues a dead worker's job again."""

    def new_batch_holder(self) -> None:
        self.batch_holder = uuid.uuid4().hex

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def batch_submit(self, job: BatchRecord, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            busy = conn.execute(f"SELECT id FROM batch_jobs WHERE output = ? AND {_ACTIVE}", (job.output,)).fetchone()
            if busy is not None:
                raise OutputBusyError(busy[0], job.output)
            conn.execute("INSERT INTO batch_jobs (id, model, input, output, options, state, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                         (job.id, job.model, job.input, job.output, dump(job.options), now, now))

        await self._write(run)
        job.state, job.created_at, job.updated_at = "queued", now, now

    async def batch_get(self, job_id: str) -> BatchRecord | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM batch_jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else batch_from_row(row)

    async def batch_list(self, limit: int = 100) -> list[BatchRecord]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM batch_jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall())
        return [batch_from_row(r) for r in rows]

    async def batch_claim(self, now: float) -> BatchRecord | None:
        row = await self._write(lambda conn: conn.execute(
            "UPDATE batch_jobs SET state = 'running', attempts = attempts + 1, updated_at = ?, holder = ? "
            "WHERE seq = (SELECT seq FROM batch_jobs WHERE state = 'queued' OR (? AND state = 'running' AND "
            "(holder IS NULL OR holder != ?)) ORDER BY seq LIMIT 1) "
            f"RETURNING {BATCH_COLUMNS}",
            (now, self.batch_holder, self.batch_takes_over, self.batch_holder)).fetchone())
        return None if row is None else batch_from_row(row)

    async def batch_update(self, job_id: str, attempt: int, progress: dict[str, Any], now: float) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE batch_jobs SET progress = ?, updated_at = ? "
            "WHERE id = ? AND state = 'running' AND attempts = ? AND holder = ?",
            (dump(progress), now, job_id, attempt, self.batch_holder)).rowcount > 0)

    async def batch_end(self, job_id: str, attempt: int, state: str, now: float, *,
                        progress: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                        error: str | None = None) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE batch_jobs SET state = ?, progress = COALESCE(?, progress), summary = COALESCE(?, summary), "
            "error = ?, updated_at = ?, holder = NULL WHERE id = ? AND state = 'running' AND attempts = ? "
            "AND holder = ?",
            (state, dump(progress), dump(summary), error, now, job_id, attempt, self.batch_holder)).rowcount > 0)

    async def batch_cancel(self, job_id: str, now: float) -> BatchRecord | None:
        def run(conn: sqlite3.Connection) -> BatchRecord | None:
            conn.execute(f"UPDATE batch_jobs SET state = 'cancelled', updated_at = ?, holder = NULL, error = ? "
                         f"WHERE id = ? AND {_ACTIVE}", (now, CANCELLED, job_id))
            row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batch_jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else batch_from_row(row)

        return await self._write(run)

