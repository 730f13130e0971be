"""One SQLite job store shared by the workers of one ``inferd serve --workers N`` supervisor.

SQLite in WAL mode takes writers from several processes (each waits its turn, ``busy_timeout``); what a lone
server gets from its lock is that nobody else runs its jobs, so at start it may put every ``running`` job back in
the queue. With workers, the supervisor holds that lock for all of them (a second server on the folder is still
refused), does that start-up requeue once before any worker starts, and records nothing else: each worker writes
a row in ``job_claims`` (job id, worker name) for every job it claims, and claims batch jobs under its name
(``batch_jobs.holder``), never a running one of a sibling; when a worker exits the supervisor queues again the
``running`` jobs and batch jobs it had claimed (a batch job resumes from its output's journal). Claims are exact
and need no clock: a job is never taken from a live worker, and the ``status = 'running' AND attempts = ?``
checks of the store already keep a late writer from storing a second result.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from inferd.jobs.sqlite_store import StoreLockedError, connect, lock_folder, migrate

log = logging.getLogger(__name__)

CLAIMS_TABLE = "CREATE TABLE IF NOT EXISTS job_claims (job_id TEXT PRIMARY KEY, worker TEXT NOT NULL)"
"""A table older servers do not read (they requeue every running job at start, which is right for them)."""

_TIDY_S = 60.0


def record_claims(conn: sqlite3.Connection, job_ids: Iterable[str], worker: str) -> None:
    """In the claim's own transaction: these jobs are ``worker``'s now."""
    conn.executemany("INSERT OR REPLACE INTO job_claims (job_id, worker) VALUES (?, ?)",
                     [(job_id, worker) for job_id in job_ids])


class SharedStateFolder:
    """The supervisor's side: the lock, the start-up requeue, and the requeue of a worker that exited."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._tidied = 0.0

    def open(self) -> bool:
        """Take the folder and requeue what a previous server left running; False (logged) when it cannot be
        taken: the workers then find the store as a lone server would (and say why async is off)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_folder(self.folder)
            conn = connect(self.folder / "jobs.db")
            migrate(conn, self.folder / "jobs.db")
            conn.execute(CLAIMS_TABLE)
            now = time.time()
            requeued = conn.execute("UPDATE jobs SET status = 'queued', updated_at = ?, not_before = 0 "
                                    "WHERE status = 'running'", (now,)).rowcount
            conn.execute("DELETE FROM job_claims")
            requeued += conn.execute("UPDATE batch_jobs SET state = 'queued', holder = NULL, updated_at = ? "
                                     "WHERE state = 'running'", (now,)).rowcount
        except (OSError, sqlite3.Error, StoreLockedError) as exc:
            log.warning("the workers cannot share the job store in %s: %s", self.folder, exc)
            self.close()
            return False
        self._conn = conn
        if requeued:
            log.info("asynchronous and batch jobs: %d that were running when the server stopped are queued again",
                 requeued)
        return True

    def requeue(self, worker: str) -> int:
        """Queue again the running jobs ``worker`` claimed (it exited); how many."""
        conn = self._conn
        if conn is None:
            return 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(
                    "UPDATE jobs SET status = 'queued', updated_at = ?, not_before = 0 WHERE status = 'running' "
                    "AND id IN (SELECT job_id FROM job_claims WHERE worker = ?)", (time.time(), worker)).rowcount
                conn.execute("DELETE FROM job_claims WHERE worker = ?", (worker,))
                count += conn.execute("UPDATE batch_jobs SET state = 'queued', holder = NULL, updated_at = ? "
                                      "WHERE state = 'running' AND holder = ?", (time.time(), worker)).rowcount
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("could not requeue the jobs of worker %s (a restart of the server will)", worker)
            return 0
        return int(count)

    def tidy(self) -> None:
        """Forget the claims of jobs no longer running (at most once a minute)."""
        now = time.monotonic()
        if self._conn is None or now - self._tidied < _TIDY_S:
            return
        self._tidied = now
        try:
            self._conn.execute("DELETE FROM job_claims WHERE job_id NOT IN "
                               "(SELECT id FROM jobs WHERE status = 'running')")
        except sqlite3.Error:
            log.warning("could not tidy the job claims", exc_info=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
