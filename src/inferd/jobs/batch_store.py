"""The job store's part for batch jobs submitted over HTTP: their records, and what a store does with them.

A batch job's record holds what its status reports (model, input, output, options, state, the latest progress,
the summary or the error), never its rows: those are in the output folder and its journal, which is what lets a
re-run resume without writing a row twice. Both stores (SQLite, PostgreSQL) implement :class:`BatchStore`.

Rules every implementation keeps:

- ``batch_submit`` returns only once the record is durable, and refuses (:class:`OutputBusyError`) a job whose
  output an active (queued or running) job already writes: checked by the store, so two replicas cannot both
  accept one.
- ``batch_claim`` hands a job to one server at a time: a queued one, or a running one whose server is gone (its
  lease ran out; on SQLite, which one server owns, any running job the store's current holder did not claim).
  Each claim counts an attempt.
- ``batch_update`` and ``batch_end`` change a job only while it is running as the same attempt: a server whose
  job was cancelled or taken over learns it from their False and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")
BATCH_COLUMNS = ("id, model, input, output, options, state, created_at, updated_at, attempts, progress, summary, "
                 "error")
"""The columns :func:`batch_from_row` reads, in its order (the same in every SQL store)."""


class OutputBusyError(Exception):
    """Another batch job, queued or running, writes to the same output."""

    def __init__(self, job_id: str, output: str) -> None:
        super().__init__(f"batch job {job_id} is already writing to {output}")
        self.job_id = job_id


@dataclass(slots=True)
class BatchRecord:
    """A batch job as the store keeps it."""

    id: str
    model: str
    input: str
    output: str
    options: dict[str, Any]
    """The job's :class:`~inferd.batch.options.BatchOptions` as JSON (see :mod:`inferd.batch.server_jobs`)."""
    state: str = "queued"
    """queued, running, succeeded, failed or cancelled."""
    created_at: float = 0.0
    updated_at: float = 0.0
    attempts: int = 0
    """Runs begun: more than one when a server stopped or died while running it and another run resumed it."""
    progress: dict[str, Any] | None = None
    """The latest :class:`~inferd.batch.progress.Progress` as a dict."""
    summary: dict[str, Any] | None = None
    error: str | None = None

    def status(self) -> dict[str, Any]:
        """The status document of ``GET /v2/batch/jobs/{id}``."""
        from inferd.jobs.store import iso  # (store.py imports this module for the protocol)

        progress = self.progress or {}
        eta = progress.get("eta_s")
        return {
            "id": self.id, "state": self.state, "model": self.model, "input": self.input, "output": self.output,
            "rows_done": progress.get("rows_done", 0),
            "rows_failed": progress.get("rows_failed", 0),
            "rows_total": progress.get("rows_total"),
            "rows_total_is_estimate": progress.get("total_is_estimate", True),
            "rows_per_s": round(progress.get("rows_per_s", 0.0), 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            "elapsed_s": round(progress.get("elapsed_s", 0.0), 3),
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at), "attempts": self.attempts,
            "summary": self.summary,
            "error": self.error,
        }


def batch_from_row(row: tuple[Any, ...]) -> BatchRecord:
    """A :class:`BatchRecord` from the :data:`BATCH_COLUMNS` of a row (JSON columns as text or bytes)."""
    (job_id, model, input, output, options, state, created_at, updated_at, attempts, progress, summary,
     error) = row
    return BatchRecord(job_id, model, input, output, _json(options) or {}, state, created_at, updated_at, attempts,
                       _json(progress), _json(summary), error)


def dump(value: dict[str, Any] | None) -> str | None:
    """A JSON column's text."""
    return None if value is None else orjson.dumps(value).decode()


def _json(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


class BatchStore(Protocol):
    """Durable state of the server's batch jobs (see the module docstring for the rules)."""

    async def batch_submit(self, job: BatchRecord, now: float) -> None:
        """Store a new queued job durably; :class:`OutputBusyError` when an active job writes to its output."""

    async def batch_get(self, job_id: str) -> BatchRecord | None: ...

    async def batch_list(self, limit: int = 100) -> list[BatchRecord]:
        """Newest first."""

    async def batch_claim(self, now: float) -> BatchRecord | None:
        """The oldest claimable job (see the rules), moved to running under this store with one more attempt."""

    async def batch_update(self, job_id: str, attempt: int, progress: dict[str, Any], now: float) -> bool:
        """Record the progress of a running ``attempt``; False when the job is no longer running as it."""

    async def batch_end(self, job_id: str, attempt: int, state: str, now: float, *,
                        progress: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                        error: str | None = None) -> bool:
        """End a running ``attempt`` in ``state`` (a final one, or ``queued`` to hand it back at a graceful stop),
        with its last progress (None keeps the one stored)."""

    async def batch_cancel(self, job_id: str, now: float) -> BatchRecord | None:
        """Cancel a queued or running job (the server running it stops at its next update). Returns the job
        afterwards (its state tells whether it was cancelled), or None."""
