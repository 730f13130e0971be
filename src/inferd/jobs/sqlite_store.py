"""The embedded job store: one SQLite database (WAL) in the server's state folder.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a commit returns only after the WAL is fsynced;
an acknowledged job survives ``kill -9`` of the server and a power cut. (``NORMAL`` would survive ``kill -9`` —
the WAL is in the OS page cache when the commit returns — but not a power cut.)

Throughput: every write runs on one writer thread that owns the write connection. Whatever writes are waiting
when it is free run in one transaction (each inside its own SAVEPOINT, so one failing write does not undo the
others) and share one commit and fsync: group commit. Under load a commit carries hundreds of submissions; idle,
one. Reads use a second connection on their own thread (WAL readers never wait for the writer).

One server per state folder: :meth:`SqliteJobStore.open` takes an exclusive lock file, and a second server on
the same folder gets :class:`StoreLockedError`. Servers that share a queue need a networked store (PostgreSQL).
The workers of one ``inferd serve --workers N`` share it: their supervisor holds the lock for them
(:mod:`inferd.jobs.sqlite_shared`), and each store is opened with its worker's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from inferd.jobs.sqlite_batch import BATCH_TABLE, SqliteBatchMethods
from inferd.jobs.store import (
    JOB_COLUMNS,
    CallbackAttempt,
    CallbackState,
    Job,
    JobResult,
    JobStatus,
    NewJob,
    job_from_row,
)

T = TypeVar("T")
MAX_GROUP = 1024
"""Most writes one transaction carries."""

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the current schema. 0: a store from before job ids were scoped to their owner
(``id`` was the caller's id and unique across keys; ``owner`` was absent or NULL); 1: before batch jobs submitted
over HTTP were stored (no ``batch_jobs`` table)."""

_JOBS_TABLE = """
CREATE TABLE {name} (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    version TEXT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    error_code TEXT,
    error TEXT,
    digest TEXT NOT NULL,
    header_length INTEGER,
    input_location TEXT,
    request_size INTEGER,
    request_inline BLOB,
    request_file TEXT,
    result_size INTEGER,
    result_inline BLOB,
    result_file TEXT,
    result_header_length INTEGER,
    callback_url TEXT,
    callback_state TEXT,
    owner TEXT NOT NULL DEFAULT '',
    public_id TEXT NOT NULL
)"""
"""``id`` is the store's own key; ``public_id`` is what the owner calls the job, unique per ``owner`` (the API
key's name, ``''`` without keys: never NULL, which a unique index would treat as distinct)."""

_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS jobs_public ON jobs (owner, public_id);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (model, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (seq) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (seq) WHERE callback_state = 'pending';
CREATE TABLE IF NOT EXISTS callback_attempts (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    status_code INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS callback_attempts_job ON callback_attempts (job_id);
""" + BATCH_TABLE

_V0_COLUMNS = ("seq, id, model, version, status, created_at, updated_at, started_at, finished_at, attempts, "
               "not_before, error_code, error, digest, header_length, input_location, request_size, request_inline, "
               "request_file, result_size, result_inline, result_file, result_header_length, callback_url, "
               "callback_state")
_COLUMNS = JOB_COLUMNS
_FINISHED = ("succeeded", "failed", "cancelled")


class StoreLockedError(OSError):
    """Another server holds the state folder."""


class StoreVersionError(sqlite3.DatabaseError):
    """The database was made by a newer inferd, with a schema this one does not know."""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _Op:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class _Writer(threading.Thread):
    """The one thread that writes; commits whatever writes are waiting together (group commit)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(name="inferd-jobs-writer", daemon=True)
        self._conn = conn
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()

    def put(self, op: _Op | None) -> None:
        self._ops.put(op)

    def run(self) -> None:
        stopping = False
        while not stopping:
            first = self._ops.get()
            if first is None:
                break
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                    break
                group.append(op)
            self._commit(group)
        self._conn.close()

    def _commit(self, group: list[_Op]) -> None:
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in group:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((op, op.fn(conn), None))
                except Exception as exc:
                    if not conn.in_transaction:  # SQLite rolled it all back itself (disk full, I/O error)
                        raise
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((op, None, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed (disk full, I/O error): nothing of the group is stored
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the writer thread must outlive any one commit
                    conn.execute("ROLLBACK")
            outcomes = [(op, None, exc) for op in group]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, done in by_loop.items():  # one wake-up per event loop and commit, not one per write
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, done)


def _resolve(done: list[tuple[_Op, Any, BaseException | None]]) -> None:
    for op, value, exc in done:
        if op.future.done():  # the caller was cancelled; the write happened anyway
            continue
        if exc is not None:
            op.future.set_exception(exc)
        else:
            op.future.set_result(value)


class SqliteJobStore(SqliteBatchMethods):
    """:class:`~inferd.jobs.store.JobStore` over ``<folder>/jobs.db`` (with its batch jobs' table)."""

    payloads_inline = False

    def __init__(self, folder: Path, worker: str | None = None) -> None:
        self.folder = folder
        self.worker = worker
        """The name of this worker of several (their supervisor holds the lock and requeues), None: alone."""
        self.path = folder / "jobs.db"
        self._lock_fd: int | None = None
        self._writer: _Writer | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_pool: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = None if self.worker is not None else lock_folder(self.folder)
        try:
            writer = connect(self.path)
            try:
                migrate(writer, self.path)
            except BaseException:
                writer.close()
                raise
        except BaseException:  # a store that does not open holds nothing (the lock included)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise
        self.new_batch_holder()
        if self.worker is not None:  # a worker's batch jobs: its name, as its claims of jobs (sqlite_shared)
            self.batch_holder, self.batch_takes_over = self.worker, False
        self._writer = _Writer(writer)
        self._writer.start()
        self._reader = connect(self.path)
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferd-jobs-reader")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
            self._read_pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("the job store is not open")
        op = _Op(fn, asyncio.get_running_loop())
        self._writer.put(op)
        result: T = await op.future
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None or self._read_pool is None:
            raise RuntimeError("the job store is not open")
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn, reader)

    # -- submissions and reads -------------------------------------------------------------------
    async def submit(self, job: NewJob, now: float) -> tuple[Job, bool]:
        return await self._write(lambda conn: _submit(conn, job, now))

    async def get(self, job_id: str) -> Job | None:
        return await self._read(lambda conn: _get(conn, job_id, with_callbacks=True))

    async def find(self, public_id: str, owner: str | None = None) -> list[Job]:
        return await self._read(lambda conn: _find(conn, public_id, owner))

    async def list_jobs(self, *, status: JobStatus | None = None, model: str | None = None,
                        limit: int = 100, owner: str | None = None) -> list[Job]:
        where, params = [], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?"
        return await self._read(lambda conn: [job_from_row(r) for r in conn.execute(sql, (*params, limit))])

    async def inline(self, job_id: str, which: Literal["request", "result"]) -> bytes | None:
        column = "request_inline" if which == "request" else "result_inline"
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {column} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else row[0]

    async def queued_models(self) -> set[str]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT DISTINCT model FROM jobs WHERE status = 'queued'").fetchall())
        return {r[0] for r in rows}

    async def count_by_status(self) -> dict[tuple[str, str, str], int]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT model, COALESCE(version, ''), status, COUNT(*) FROM jobs GROUP BY model, version, status"
        ).fetchall())
        return {(model, version, status): count for model, version, status, count in rows}

    # -- the worker's writes ---------------------------------------------------------------------
    async def claim(self, slots: Mapping[str, int], now: float) -> list[Job]:
        wanted = {m: n for m, n in slots.items() if n > 0}
        return await self._write(lambda conn: _claim(conn, wanted, now, self.worker)) if wanted else []

    async def complete(self, job_id: str, attempt: int, result: JobResult, now: float) -> bool:
        body = result.body
        return await self._write(lambda conn: _changed(conn.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = ?, updated_at = ?, error_code = NULL, error = NULL, "
            "result_size = ?, result_inline = ?, result_file = ?, result_header_length = ?, "
            "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END "
            "WHERE id = ? AND status = 'running' AND attempts = ?",
            (now, now, body.size, body.inline, body.file, result.header_length, job_id, attempt))))

    async def fail(self, job_id: str, attempt: int, code: str, message: str, retry_at: float | None,
                   now: float) -> bool:
        if retry_at is not None:
            sql = ("UPDATE jobs SET status = 'queued', not_before = ?, updated_at = ?, error_code = ?, error = ? "
                   "WHERE id = ? AND status = 'running' AND attempts = ?")
            params: tuple[Any, ...] = (retry_at, now, code, message, job_id, attempt)
        else:
            sql = ("UPDATE jobs SET status = 'failed', finished_at = ?, updated_at = ?, error_code = ?, error = ?, "
                   "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END "
                   "WHERE id = ? AND status = 'running' AND attempts = ?")
            params = (now, now, code, message, job_id, attempt)
        return await self._write(lambda conn: _changed(conn.execute(sql, params)))

    async def release(self, job_id: str, attempt: int, now: float) -> bool:
        return await self._write(lambda conn: _changed(conn.execute(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, updated_at = ? "
            "WHERE id = ? AND status = 'running' AND attempts = ?", (now, job_id, attempt))))

    async def cancel(self, job_id: str, now: float) -> Job | None:
        def run(conn: sqlite3.Connection) -> Job | None:
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, "
                "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END "
                "WHERE id = ? AND status = 'queued'", (now, now, job_id))
            return _get(conn, job_id)

        return await self._write(run)

    async def recover(self, now: float) -> int:
        if self.worker is not None:  # the supervisor did it before any worker started
            return 0
        return await self._write(lambda conn: conn.execute(
            "UPDATE jobs SET status = 'queued', updated_at = ?, not_before = 0 WHERE status = 'running'",
            (now,)).rowcount)

    # -- callbacks and retention -----------------------------------------------------------------
    async def pending_callbacks(self) -> list[Job]:
        def run(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE callback_state = 'pending' ORDER BY seq")
            return [_with_callbacks(conn, job_from_row(r)) for r in rows.fetchall()]

        return await self._read(run)

    async def claim_callback(self, job_id: str, now: float) -> Job | None:
        job = await self.get(job_id)  # one server per store: nobody else delivers it
        return job if job is not None and job.callback_state is CallbackState.PENDING else None

    async def record_callback(self, job_id: str, attempt: CallbackAttempt, state: CallbackState) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO callback_attempts (job_id, at, status_code, error) VALUES (?, ?, ?, ?)",
                         (job_id, attempt.at, attempt.status_code, attempt.error))
            conn.execute("UPDATE jobs SET callback_state = ? WHERE id = ?", (state.value, job_id))

        await self._write(run)

    async def expire(self, finished_before: float, now: float) -> list[str]:
        return await self._write(lambda conn: _expire(conn, finished_before, now))

    async def payload_files(self) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT request_file, result_file FROM jobs "
                                "WHERE request_file IS NOT NULL OR result_file IS NOT NULL")
            return {name for row in rows for name in row if name}

        return await self._read(run)


def lock_folder(folder: Path) -> int:
    """Take the state folder (its ``jobs.lock``) for this process; :class:`StoreLockedError` if another has it."""
    return _lock(folder / "jobs.lock")


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreLockedError(f"another inferd server (pid {holder}) uses the state folder {path.parent}; "
                          "give each server its own --state-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _changed(cursor: sqlite3.Cursor) -> bool:
    return cursor.rowcount > 0


def _submit(conn: sqlite3.Connection, job: NewJob, now: float) -> tuple[Job, bool]:
    body = job.body
    owner, public_id = job.owner or "", job.public_id or job.id
    cursor = conn.execute(
        "INSERT INTO jobs (id, model, version, status, created_at, updated_at, digest, header_length, "
        "input_location, request_size, request_inline, request_file, callback_url, owner, public_id) "
        "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, public_id) DO NOTHING",
        (job.id, job.model, job.version, now, now, job.digest, job.header_length, job.input_location,
         body.size if body else None, body.inline if body else None, body.file if body else None,
         job.callback_url, owner, public_id))
    created = cursor.rowcount > 0
    if created:  # what was just written; no need to read it back
        return Job(job.id, job.model, job.version, JobStatus.QUEUED, now, now, digest=job.digest,
                   header_length=job.header_length, input_location=job.input_location,
                   request_size=body.size if body else None, request_file=body.file if body else None,
                   callback_url=job.callback_url, owner=job.owner, public_id=public_id), True
    (existing,) = _find(conn, public_id, owner)
    return existing, False


def _claim(conn: sqlite3.Connection, slots: Mapping[str, int], now: float, worker: str | None) -> list[Job]:
    claimed: list[Job] = []
    for model, count in slots.items():
        rows = conn.execute(
            f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, updated_at = ? "
            f"WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND model = ? AND not_before <= ? "
            f"ORDER BY seq LIMIT ?) RETURNING {_COLUMNS}, request_inline", (now, now, model, now, count)).fetchall()
        for row in rows:
            job = job_from_row(row[:-1])
            job.request_inline = row[-1]
            claimed.append(job)
    if worker is not None and claimed:
        from inferd.jobs.sqlite_shared import record_claims

        record_claims(conn, (job.id for job in claimed), worker)
    return claimed


def _expire(conn: sqlite3.Connection, finished_before: float, now: float) -> list[str]:
    marks = ", ".join("?" * len(_FINISHED))
    rows = conn.execute(
        f"SELECT request_file, result_file FROM jobs WHERE finished_at < ? AND status IN ({marks})",
        (finished_before, *_FINISHED)).fetchall()
    conn.execute(
        f"UPDATE jobs SET status = 'expired', updated_at = ?, request_inline = NULL, request_file = NULL, "
        f"result_inline = NULL, result_file = NULL, result_size = NULL WHERE finished_at < ? AND status IN ({marks})",
        (now, finished_before, *_FINISHED))
    conn.execute("DELETE FROM callback_attempts WHERE job_id IN "
                 "(SELECT id FROM jobs WHERE status = 'expired' AND updated_at < ?)", (finished_before,))
    conn.execute("DELETE FROM jobs WHERE status = 'expired' AND updated_at < ?", (finished_before,))
    conn.execute(f"DELETE FROM batch_jobs WHERE state IN ({marks}) AND updated_at < ?", (*_FINISHED, finished_before))
    return [name for row in rows for name in row if name]


def _get(conn: sqlite3.Connection, job_id: str, with_callbacks: bool = False) -> Job | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    job = job_from_row(row)
    return _with_callbacks(conn, job) if with_callbacks and job.callback_url else job


def _find(conn: sqlite3.Connection, public_id: str, owner: str | None) -> list[Job]:
    sql = f"SELECT {_COLUMNS} FROM jobs WHERE public_id = ?"
    params: tuple[str, ...] = (public_id,)
    if owner is not None:
        sql, params = sql + " AND owner = ?", (public_id, owner)
    rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
    return [_with_callbacks(conn, job) if job.callback_url else job for job in map(job_from_row, rows)]


def _with_callbacks(conn: sqlite3.Connection, job: Job) -> Job:
    rows = conn.execute("SELECT at, status_code, error FROM callback_attempts WHERE job_id = ? ORDER BY rowid",
                        (job.id,))
    job.callback_attempts = [CallbackAttempt(at, code, error) for at, code, error in rows]
    return job


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction, keeping every job: a new database gets
    the schema; a version-0 one is copied into the new table (``public_id`` = its old ``id``, which stays the
    store key, so callback attempts keep pointing at their job; a missing or NULL owner becomes ``''``); a
    version-1 one gets the batch jobs' table."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreVersionError(f"{path} has job store schema {version}, newer than this inferd's "
                                f"{SCHEMA_VERSION}: use a newer inferd or another --state-dir")
    if version == SCHEMA_VERSION:
        conn.executescript(_INDEXES)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        if old and version == 0:
            conn.execute(_JOBS_TABLE.format(name="jobs_v1"))
            owner = "COALESCE(owner, '')" if "owner" in old else "''"
            conn.execute(f"INSERT INTO jobs_v1 ({_V0_COLUMNS}, owner, public_id) "
                         f"SELECT {_V0_COLUMNS}, {owner}, id FROM jobs")
            conn.execute("DROP TABLE jobs")  # and its indexes, whose names the new table takes
            conn.execute("ALTER TABLE jobs_v1 RENAME TO jobs")
        elif not old:
            conn.execute(_JOBS_TABLE.format(name="jobs"))
        for statement in _INDEXES.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
