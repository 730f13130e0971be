"""Batch jobs inside a running server: started over HTTP, run in the background on the server's own
DataPlane (one at a time, so real-time traffic keeps its share), their progress kept for status calls.

Input and output paths must lie under one of the configured roots (setting ``batch_roots``): a server must
not read or write wherever a caller names. They are checked at submission, and every file the job then reads
or writes is checked again where it is opened (:mod:`inferd.roots`), so a symbolic link inside the folders
(an input file, the output's ``.inferd-batch`` journal) cannot lead out of them. With no roots configured,
batch jobs are off. Jobs live in memory;
a job cut short by a server stop keeps its journal, and the same job submitted again resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferd.dataplane import DataPlane
from inferd.roots import OutsideRootsError, Roots

if TYPE_CHECKING:  # the batch machinery: imported by the first job, not at every server start
    from inferd.batch.job import BatchSummary
    from inferd.batch.options import BatchOptions
    from inferd.batch.progress import Progress

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


class RefusedError(Exception):
    """A batch job the server will not run; ``status`` is the HTTP status that fits (403, 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class BatchJob:
    id: str
    model: str
    input: str
    output: Path
    options: BatchOptions
    state: str = "queued"
    """queued, running, succeeded, failed or cancelled."""
    created: float = field(default_factory=time.time)
    progress: Progress | None = None
    summary: BatchSummary | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def status(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "id": self.id, "state": self.state, "model": self.model, "input": self.input, "output": str(self.output),
            "rows_done": progress.rows_done if progress else 0,
            "rows_failed": progress.rows_failed if progress else 0,
            "rows_total": progress.rows_total if progress else None,
            "rows_total_is_estimate": progress.total_is_estimate if progress else True,
            "rows_per_s": round(progress.rows_per_s, 1) if progress else 0.0,
            "eta_s": round(progress.eta_s, 1) if progress and progress.eta_s is not None else None,
            "elapsed_s": round(progress.elapsed_s, 3) if progress else 0.0,
            "summary": self.summary.to_dict() if self.summary else None,
            "error": self.error,
        }


class BatchJobs:
    """The server's batch jobs."""

    def __init__(self, dataplane: DataPlane, roots: Sequence[str | Path]) -> None:
        self.dataplane = dataplane
        self.roots = Roots.of(roots, "batch_roots")
        self._jobs: dict[str, BatchJob] = {}
        self._one_at_a_time = asyncio.Semaphore(1)

    def submit(self, model: str, input: str, output: str, options: BatchOptions) -> BatchJob:
        """Check the paths and start the job in the background. Raises :class:`RefusedError`,
        :class:`BatchError` for invalid options, or InferError for an unknown model."""
        from inferd.batch.options import BatchError

        options = options.validated()
        if options.engine != "local":
            raise BatchError("the server runs batch jobs on its own models: engine must be 'local'")
        if not self.dataplane.loadable(model):  # on demand, the job's start loads it
            self.dataplane.repository.get(model, None)  # NOT_FOUND / UNAVAILABLE, as the infer route says
        source, target = self._allowed(input, "input"), self._allowed(output, "output")
        clash = [j.id for j in self._jobs.values() if j.state in ACTIVE and j.output == target]
        if clash:
            raise RefusedError(409, f"batch job {clash[0]} is already writing to {target}")
        job = BatchJob(uuid.uuid4().hex, model, str(source), target, options)
        self._jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"inferd-batch-{job.id}")
        return job

    def get(self, job_id: str) -> BatchJob | None:
        return self._jobs.get(job_id)

    def list(self) -> list[BatchJob]:
        """Newest first, as asynchronous jobs are listed."""
        return list(reversed(self._jobs.values()))  # in the order they were submitted

    async def stop(self) -> None:
        """Cancel the jobs still queued or running (their journals let a later submission resume them)."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _allowed(self, location: str, what: str) -> Path:
        if not self.roots.folders:
            raise RefusedError(403, "batch jobs are off on this server: set batch_roots (INFERD_BATCH_ROOTS, a "
                                    "JSON list of folders) to the folders jobs may read and write")
        if "://" in location:
            raise RefusedError(403, f"{what} must be a local path under batch_roots, not a URL")
        try:
            return self.roots.check(location, what)
        except OutsideRootsError as exc:
            raise RefusedError(403, exc.message) from None

    async def _run(self, job: BatchJob) -> None:
        from inferd.batch.job import ThresholdError
        from inferd.batch.options import BatchError
        from inferd.batch.run import run_job

        def on_progress(progress: Progress) -> None:
            job.progress = progress

        try:
            async with self._one_at_a_time:
                job.state = "running"
                job.summary = await run_job(self.dataplane, job.model, job.input, job.output, job.options,
                                            on_progress, self.roots)
            job.state = "succeeded"
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "the server stopped; submit the same job again to resume it"
            raise
        except ThresholdError as exc:
            job.state, job.error, job.summary = "failed", str(exc), exc.summary
        except BatchError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a job must never take the server down; its status says what happened
            log.exception("batch job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
