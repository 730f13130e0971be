"""Batch jobs inside a running server: submitted over HTTP, recorded in the job store, run in the background on
the server's own DataPlane (one at a time per server, so real-time traffic keeps its share).

Input and output paths must lie under one of the configured roots (setting ``batch_roots``): a server must
not read or write wherever a caller names. They are checked at submission, and every file the job then reads
or writes is checked again where it is opened (:mod:`inferd.roots`), so a symbolic link inside the folders
(an input file, the output's ``.inferd-batch`` journal) cannot lead out of them. With no roots configured,
batch jobs are off.

Durability. A job's record (model, input, output, options, state, progress, summary or error) is in the job
store (:mod:`inferd.jobs.batch_store`: SQLite in the state folder, or the PostgreSQL database replicas share)
before its 202, and status, list and cancel read it there, so any replica answers for any job. Each server runs
a loop that claims one job at a time from the store; a claim is a lease (PostgreSQL) or belongs to the store's
one server (SQLite). A server that stops hands its job back to the queue; one that dies leaves it running until
its lease runs out (at once on SQLite, whose next server is the only one), and the next claim resumes it from
the output's journal: rows already written are neither lost nor written twice. Progress reaches the store every
:data:`PROGRESS_S`; the same write tells the running server that its job was cancelled or taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferd.backoff import doubling_delay
from inferd.calls import Routing
from inferd.dataplane import DataPlane
from inferd.errors import InferError, unavailable
from inferd.jobs.batch_store import BatchRecord, BatchStore, OutputBusyError
from inferd.roots import OutsideRootsError, Roots

if TYPE_CHECKING:  # the batch machinery: imported by the first job, not at every server start
    from inferd.batch.job import BatchSummary
    from inferd.batch.options import BatchOptions
    from inferd.batch.progress import Progress

log = logging.getLogger(__name__)

PROGRESS_S = 0.5
"""How often a running job's progress is written to the store (and the store asked whether it is still ours)."""
POLL_S = 1.0
"""How often an idle server looks for jobs another server accepted (its own submissions wake it at once)."""
END_RETRY_S = 0.5
END_RETRY_MAX_S = 10.0
"""First and longest wait before telling the store again how a run ended, while it cannot be reached."""
STOPPED = "batch jobs are not running on this server yet (the job store is not open)"


class RefusedError(Exception):
    """A batch job the server will not run; ``status`` is the HTTP status that fits (403, 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(slots=True)
class _Running:
    record: BatchRecord
    progress: Progress | None = None


class BatchJobs:
    """The server's batch jobs, kept in ``store`` (None, or not started: submissions are refused with 503)."""

    def __init__(self, dataplane: DataPlane, roots: Sequence[str | Path], store: BatchStore | None = None) -> None:
        self.dataplane = dataplane
        self.roots = Roots.of(roots, "batch_roots")
        self.store = store
        self.why_not = STOPPED
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._running: _Running | None = None

    def start(self) -> None:
        """Start claiming and running jobs (the store is open)."""
        if self.store is not None and self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._claim_loop(self.store), name="inferd-batch-jobs")

    async def stop(self) -> None:
        """Stop the loop; a running job goes back to the queue, to be resumed from its journal."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    def _store(self) -> BatchStore:
        if self.store is None or self._loop is None:
            raise unavailable(self.why_not)
        return self.store

    async def submit(self, model: str, input: str, output: str, options: BatchOptions,
                     variant: str | None = None) -> BatchRecord:
        """Check the paths and record the job; the claim loop starts it. Raises :class:`RefusedError`,
        :class:`BatchError` for invalid options, or InferError for an unknown model or an unreachable store.
        ``model`` may name an endpoint: the job is pinned to one variant (``variant``, else one picked by weight)
        for its whole run, every run of it included."""
        from inferd.batch.options import BatchError

        options = options.validated()
        if options.engine != "local":
            raise BatchError("the server runs batch jobs on its own models: engine must be 'local'")
        model, options, pinned = _pin_variant(self.dataplane, model, options, variant)
        if not self.dataplane.loadable(model):  # on demand, the job's start loads it
            self.dataplane.repository.get(model, None)  # NOT_FOUND / UNAVAILABLE, as the infer route says
        source, target = self._allowed(input, "input"), self._allowed(output, "output")
        store = self._store()
        record = BatchRecord(uuid.uuid4().hex, model, str(source), str(target), {**options.to_json(), **pinned})
        try:
            await store.batch_submit(record, time.time())
        except OutputBusyError as exc:
            raise RefusedError(409, str(exc)) from None
        self._wake.set()
        return record

    async def get(self, job_id: str) -> BatchRecord | None:
        return self._live(await self._store().batch_get(job_id))

    async def list(self, limit: int = 100) -> list[BatchRecord]:
        """Newest first, as asynchronous jobs are listed."""
        return [r for r in map(self._live, await self._store().batch_list(limit)) if r is not None]

    async def cancel(self, job_id: str) -> BatchRecord | None:
        """Cancel a queued or running job; the server running it stops within :data:`PROGRESS_S`."""
        return await self._store().batch_cancel(job_id, time.time())

    async def counts(self) -> dict[tuple[str, str], int]:
        """(model, state) → jobs among the latest 10,000 in the store, for the metrics (empty when it is away)."""
        if self.store is None or self._loop is None:
            return {}
        try:
            records = await self.store.batch_list(10_000)
        except (InferError, RuntimeError) as exc:
            log.debug("batch job counts unavailable: %s", exc)
            return {}
        counts: dict[tuple[str, str], int] = {}
        for record in records:
            counts[record.model, record.state] = counts.get((record.model, record.state), 0) + 1
        return counts

    def _live(self, record: BatchRecord | None) -> BatchRecord | None:
        """The stored record, with this server's newer progress when it runs the job."""
        running = self._running
        if record is not None and running is not None and running.record.id == record.id \
                and record.state == "running" and running.progress is not None:
            record.progress = running.progress.to_dict()
        return record

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

    # -- the claim loop ------------------------------------------------------------------------
    async def _claim_loop(self, store: BatchStore) -> None:
        while True:
            self._wake.clear()
            try:
                record = await store.batch_claim(time.time())
            except Exception as exc:  # the store away for a while: try again later, the server goes on
                log.warning("claiming a batch job failed: %s", getattr(exc, "message", exc))
                record = None
            if record is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                continue
            log.info("batch job %s: run %d begins", record.id, record.attempts)
            try:
                await self._run(store, record)
            except Exception:  # a bug must not stop the loop: the next job still runs
                log.exception("batch job %s: its run broke off", record.id)

    async def _run(self, store: BatchStore, record: BatchRecord) -> None:
        running = self._running = _Running(record)
        work = asyncio.create_task(self._work(running), name=f"inferd-batch-{record.id}")
        keeper = asyncio.create_task(self._keep(store, running, work), name=f"inferd-batch-progress-{record.id}")
        try:
            await self._finish(store, running, work)
        finally:
            keeper.cancel()
            self._running = None

    async def _work(self, running: _Running) -> BatchSummary:
        from inferd.batch.options import BatchOptions
        from inferd.batch.run import run_job

        record = running.record
        options = BatchOptions.from_json(record.options)
        if record.attempts > 1:  # a later run resumes what the earlier ones wrote, whatever the first asked
            options = dataclasses.replace(options, restart=False)

        def on_progress(progress: Progress) -> None:
            running.progress = progress

        return await run_job(self.dataplane, record.model, record.input, Path(record.output), options, on_progress,
                             self.roots)

    async def _finish(self, store: BatchStore, running: _Running, work: asyncio.Task[Any]) -> None:
        """Wait for the job and store how it ended (a server stop hands it back to the queue)."""
        from inferd.batch.job import ThresholdError
        from inferd.batch.options import BatchError

        state, summary, error = "succeeded", None, None
        try:
            summary = (await work).to_dict()
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or not me.cancelling():
                return  # the keeper stopped it: cancelled or taken over, as the store already says
            with contextlib.suppress(Exception):  # else its lease runs out (SQLite: the next server takes it)
                await store.batch_end(running.record.id, running.record.attempts, "queued", time.time(),
                                      progress=running.progress.to_dict() if running.progress else None)
            raise
        except ThresholdError as exc:
            state, summary, error = "failed", exc.summary.to_dict(), str(exc)
        except BatchError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:  # a job must never take the server down; its status says what happened
            log.exception("batch job %s failed", running.record.id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        await self._end(store, running, state, summary, error)

    @staticmethod
    async def _end(store: BatchStore, running: _Running, state: str, summary: dict[str, Any] | None,
                   error: str | None) -> None:
        """Store how the run ended, trying until the store takes it: this server holds the job (and renews its
        lease) until then, so no other run would."""
        record, progress = running.record, running.progress
        for tries in itertools.count(1):
            try:
                await store.batch_end(record.id, record.attempts, state, time.time(),
                                      progress=progress.to_dict() if progress else None, summary=summary,
                                      error=error)
                return
            except Exception as exc:
                log.warning("batch job %s ended %s, but the job store could not be told (trying again): %s",
                            record.id, state, getattr(exc, "message", exc))
                await asyncio.sleep(doubling_delay(END_RETRY_S, tries, END_RETRY_MAX_S))

    @staticmethod
    async def _keep(store: BatchStore, running: _Running, work: asyncio.Task[Any]) -> None:
        """Write the progress every PROGRESS_S; stop the job once the store says it is no longer this run's."""
        record = running.record
        while not work.done():
            await asyncio.sleep(PROGRESS_S)
            progress = running.progress
            try:
                ours = await store.batch_update(record.id, record.attempts,  # (before the first: the last run's)
                                                progress.to_dict() if progress else record.progress or {}, time.time())
            except Exception as exc:
                log.warning("batch job %s: its progress could not be stored: %s", record.id,
                            getattr(exc, "message", exc))
                continue
            if not ours:
                log.info("batch job %s was cancelled or taken over: this run stops", record.id)
                work.cancel()
                return


def _pin_variant(dataplane: DataPlane, name: str, options: BatchOptions,
                 variant: str | None) -> tuple[str, BatchOptions, dict[str, str]]:
    """The model and options a job naming ``name`` runs on, and the endpoint and variant it is pinned to (kept
    in the record's options, which runs ignore; empty when ``name`` is a model): a job's rows all go to one
    variant, and to one version of it when its model is loaded now, so that its output is consistent."""
    from inferd.batch.options import BatchError

    endpoints = dataplane.endpoints
    if endpoints is None or name not in endpoints.table.endpoints:
        if variant is not None:
            raise BatchError(f"'variant' is for a job naming an endpoint; {name!r} is not one")
        return name, options, {}
    if options.model_version is not None:
        raise BatchError(f"{name!r} is an endpoint, it has no versions: name a variant with 'variant' instead")
    routing = Routing(variant=variant)
    model, version = dataplane.resolve(name, None, routing)  # NOT_FOUND naming the variants for a bad one
    if version is None and dataplane.repository.known(model) is not None:
        with contextlib.suppress(InferError):  # not ready now: the first run pins its newest version
            version = dataplane.repository.get(model, None).version_text
    assert routing.answered is not None
    return model, dataclasses.replace(options, model_version=version), {"endpoint": name, "variant": routing.answered}
