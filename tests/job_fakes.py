"""Jobs as the asynchronous-inference tests submit them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferd.jobs.store import NewJob, Payload


def committed_jobs(store: Any) -> list[tuple[str, str]]:
    """(id, status) of every job, read on a connection of its own: what another process would find."""
    from inferd.jobs.sqlite_store import SqliteJobStore

    if isinstance(store, SqliteJobStore):
        with sqlite3.connect(store.path) as conn:
            return conn.execute("SELECT id, status FROM jobs ORDER BY seq").fetchall()
    import psycopg

    with psycopg.connect(store.dsn) as conn:
        return conn.execute("SELECT id, status FROM inferd_jobs ORDER BY seq").fetchall()


async def set_callback_urls(store: Any, url: str) -> None:
    """Point every job's callback at ``url`` (a receiver started after the jobs were stored)."""
    from inferd.jobs.sqlite_store import SqliteJobStore

    if isinstance(store, SqliteJobStore):
        await store._write(lambda conn: conn.execute("UPDATE jobs SET callback_url = ?", (url,)))
    else:
        await store._execute("UPDATE inferd_jobs SET callback_url = %s", (url,))


def new_job(job_id: str, model: str = "m", body: bytes = b"{}", **kwargs: Any) -> NewJob:
    return NewJob(job_id, model, None, f"digest-{job_id}-{body!r}", Payload(len(body), inline=body), **kwargs)


V0_SCHEMA = """
CREATE TABLE jobs (
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
    callback_state TEXT{owner}
);
CREATE INDEX jobs_queued ON jobs (model, seq) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (seq) WHERE status = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_callbacks ON jobs (seq) WHERE callback_state = 'pending';
CREATE TABLE callback_attempts (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    status_code INTEGER,
    error TEXT
);
CREATE INDEX callback_attempts_job ON callback_attempts (job_id);
"""
"""The job store's schema before job ids were scoped to their owner (user_version 0), as releases up to 8fd9ff0
made it: without the ``owner`` column (``{owner}`` empty) or with it (``,\\n    owner TEXT``)."""


def write_v0_store(folder: Path, jobs: list[dict[str, Any]], with_owner: bool = True,
                   callback_attempts: Sequence[tuple[str, float, int | None, str | None]] = ()) -> None:
    """A state folder as an older inferd left it: ``jobs`` are rows (column → value) of the old table."""
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "jobs.db")
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(V0_SCHEMA.format(owner=",\n    owner TEXT" if with_owner else ""))
        for row in jobs:
            columns = ", ".join(row)
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        conn.executemany("INSERT INTO callback_attempts VALUES (?, ?, ?, ?)", list(callback_attempts))
        conn.commit()
    finally:
        conn.close()
