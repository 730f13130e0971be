"""Asynchronous inference as one service: the job store, payload files, worker, callbacks and retention,
started after the DataPlane and stopped before it. The REST routes (``server/rest/async_routes.py``) only
translate HTTP to the calls here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from inferd.backoff import doubling_delay
from inferd.codecs import generate as generate_body
from inferd.codecs.v2_body import V2Body
from inferd.dataplane import DataPlane
from inferd.errors import InferError, invalid, unavailable
from inferd.jobs.callbacks import CallbackSender
from inferd.jobs.destinations import Destinations, RefusedDestinationError
from inferd.jobs.inputs import local_roots, read_location
from inferd.jobs.payloads import PayloadFiles
from inferd.jobs.retention import Retention
from inferd.jobs.sqlite_store import SqliteJobStore
from inferd.jobs.storage import disk_full_error, is_disk_full
from inferd.jobs.store import CallbackState, Job, JobStatus, JobStore, NewJob, StoreOpenError
from inferd.jobs.worker import RetryPolicy, Worker, WorkerOptions
from inferd.settings import ServerSettings

log = logging.getLogger(__name__)

FULL_LOG_INTERVAL_S = 60.0
"""Least time between two log lines about submissions refused for a full disk."""
RECOVERY_RETRY_S = 0.5
"""First wait before trying again to requeue the jobs a dead server left running, when the disk was full."""
RECOVERY_RETRY_MAX_S = 10.0
INTAKE_WHEN_BEHIND = 8
"""Submissions stored at once while the worker is behind (more queued than it has places for). One event loop
serves both: unbounded, a flood of submissions makes every loop turn long, and each step of a job (claim,
inference, result) waits a turn, so completion fell to about 50 jobs/s while submissions poured in. Bounding the
submissions in flight keeps the turns short; wrk's 64 connections then share the loop with the worker
(benchmarks/async_bench.py)."""


@dataclass(frozen=True, slots=True)
class AsyncConfig:
    """The settings asynchronous inference uses (see :class:`~inferd.settings.ServerSettings` for each)."""

    state_dir: Path
    max_body_bytes: int = 1024 ** 3
    inline_payload_bytes: int = 1024 * 1024
    concurrency_per_model: int = 2
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    ttl_s: float = 24 * 3600
    callback_url: str | None = None
    model_callback_urls: Mapping[str, str] = field(default_factory=dict)
    callback_max_attempts: int = 5
    input_roots: tuple[str, ...] = ()
    callback_allowed: tuple[str, ...] = ()
    public_url: str = ""
    """What job links start with; empty: they are paths."""
    job_store: str | None = None
    """A PostgreSQL URL, or None for SQLite in ``state_dir``."""
    job_lease_s: float = 30.0
    sqlite_worker: str | None = None
    """This server's name as one of several workers sharing the SQLite store (``--workers N``), else None."""

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> AsyncConfig:
        return cls(settings.state_dir, settings.async_max_body_bytes, settings.async_inline_payload_bytes,
                   settings.async_concurrency_per_model, settings.async_max_attempts,
                   settings.async_retry_backoff_s, settings.async_ttl_s, settings.async_callback_url,
                   dict(settings.async_model_callback_urls), settings.async_callback_max_attempts,
                   tuple(settings.async_input_roots), tuple(settings.async_callback_allowed),
                   settings.public_url or "", settings.job_store or None, settings.job_lease_s)

    def open_store(self) -> JobStore:
        """The store the settings name. A store that keeps payloads itself gets every body inline (up to the
        largest body accepted), never a payload file only this server could read."""
        if self.job_store:  # a postgresql:// URL (the setting checks it)
            from inferd.jobs.postgres_store import PostgresJobStore

            return PostgresJobStore(self.job_store, lease_s=self.job_lease_s)
        return SqliteJobStore(self.state_dir, self.sqlite_worker)


class AsyncService:
    def __init__(self, dataplane: DataPlane, config: AsyncConfig, store: JobStore | None = None) -> None:
        self.dataplane = dataplane
        self.store: JobStore = store or config.open_store()
        if self.store.payloads_inline:
            config = dataclasses.replace(config, inline_payload_bytes=config.max_body_bytes)
        self.config = config
        self.files = PayloadFiles(config.state_dir / "payloads")
        self.input_roots = local_roots(config.input_roots)
        self.retention = Retention(self.store, self.files, config.ttl_s)
        self.destinations = Destinations(config.callback_allowed,
                                         [u for u in (config.callback_url, *config.model_callback_urls.values()) if u])
        self.callbacks = CallbackSender(self.store, self.destinations, max_attempts=config.callback_max_attempts,
                                        backoff_s=config.retry_backoff_s, links_base=config.public_url)
        options = WorkerOptions(config.concurrency_per_model, RetryPolicy(config.max_attempts, config.retry_backoff_s),
                                config.inline_payload_bytes)
        self.worker = Worker(self.store, self.files, self._infer, self._load_body, options,
                             on_finished=self._finished)
        self.started = False
        self.why_not = "asynchronous inference is starting"
        self._retention_task: asyncio.Task[None] | None = None
        self._recovery_task: asyncio.Task[None] | None = None
        self._opened = False
        self._full_logged_at = -FULL_LOG_INTERVAL_S
        self._intake = asyncio.Semaphore(INTAKE_WHEN_BEHIND)
        self.worker.flooded = self._intake.locked

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the store, requeue jobs a dead server left running, delete payload files no job refers to and
        resume pending callbacks. A store that cannot open (a state folder another server holds, a read-only
        disk) leaves asynchronous inference off, logged and said by every async route, rather than the whole
        server down; a full disk delays the requeueing until there is space (:meth:`_recover_later`)."""
        try:
            await self.store.open()
        except (OSError, sqlite3.Error, StoreOpenError) as exc:
            self.why_not = f"asynchronous inference is off: {exc}"
            log.warning("%s", self.why_not)
            return
        self._opened = True
        self.files.prepare()
        if not await self._recover():
            self._recovery_task = asyncio.create_task(self._recover_later(), name="inferd-jobs-recovery")
        # (a shared store's payloads are in it; a worker's sibling may be writing one it has not committed yet)
        if not self.store.payloads_inline and self.config.sqlite_worker is None:
            orphans = self.files.names() - await self.store.payload_files()
            self.files.delete(orphans)
        await self.callbacks.start()

    async def _recover(self) -> bool:
        """Queue again the jobs a dead server left running; False when the disk is too full to store that."""
        try:
            recovered = await self.store.recover(time.time())
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            return False
        if recovered:
            log.info("asynchronous jobs: %d that were running when the server stopped are queued again", recovered)
        return True

    async def _recover_later(self) -> None:
        """Recovery on a full disk: the server starts anyway (real-time inference needs no disk), and the jobs
        left running are queued again as soon as there is space, without a restart."""
        log.warning("asynchronous jobs left running by the last server cannot be queued again yet: the state "
                    "folder %s is out of disk space; trying again until there is space", self.config.state_dir)
        tries = 0
        while True:
            tries += 1
            await asyncio.sleep(doubling_delay(RECOVERY_RETRY_S, tries, RECOVERY_RETRY_MAX_S))
            if await self._recover():
                return

    @property
    def opened(self) -> bool:
        """Whether the store is open (batch jobs use it too)."""
        return self._opened

    def start(self) -> None:
        """Start taking jobs: the worker and retention. Synchronous, so that the server can call it right after
        the models are loaded, before readiness is visible to any request."""
        if not self._opened:
            return
        self.worker.start()
        self._retention_task = asyncio.create_task(self.retention.run(), name="inferd-jobs-retention")
        self.started = True

    async def stop(self) -> None:
        self.started = False
        self.why_not = "asynchronous inference is stopping"
        for task in (self._retention_task, self._recovery_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.worker.stop()
        await self.callbacks.stop()
        if self._opened:
            await self.store.close()
            self._opened = False

    def check(self) -> None:
        """UNAVAILABLE unless jobs can be submitted now."""
        if not self.started:
            raise unavailable(self.why_not)

    # -- what the routes call ------------------------------------------------------------------
    def callback_for(self, model: str, given: str | None) -> str | None:
        """The job's callback URL: the request's (which must be an allowed destination: INVALID_ARGUMENT
        naming ``async_callback_allowed`` otherwise), else the model's, else the server's default."""
        if given is not None:
            try:
                self.destinations.check(given)
            except RefusedDestinationError as exc:
                raise invalid(f"Inference-Callback-Url: {exc}") from None
        return given or self.config.model_callback_urls.get(model) or self.config.callback_url

    def disk_full(self, exc: BaseException) -> InferError | None:
        """The refusal for a write that failed because the state folder's disk is full (None: another failure)."""
        if not is_disk_full(exc):
            return None
        refusal = disk_full_error(self.config.state_dir, exc)
        now = time.monotonic()
        if now - self._full_logged_at >= FULL_LOG_INTERVAL_S:  # one line a minute, not one per refused request
            self._full_logged_at = now
            log.warning("refusing asynchronous submissions: %s", refusal.message)
        return refusal

    async def submit(self, job: NewJob) -> tuple[Job, bool]:
        self.check()
        try:
            if self.worker.behind or self._intake.locked():
                async with self._intake:
                    stored, created = await self.store.submit(job, time.time())
            else:
                stored, created = await self.store.submit(job, time.time())
        except Exception as exc:
            refusal = self.disk_full(exc)
            if refusal is None:
                raise
            raise refusal from exc
        if created:
            self.worker.wake(job.model)
        return stored, created

    async def cancel(self, job_id: str) -> Job | None:
        self.check()
        job = await self.store.cancel(job_id, time.time())
        if job is not None and job.status is JobStatus.CANCELLED and job.callback_state is CallbackState.PENDING:
            self.callbacks.notify(job.id)
        return job

    async def counts(self) -> dict[tuple[str, str, str], int]:
        """(model, version, status) → jobs in the store, for the metrics; empty while the store is closed."""
        if not self._opened:
            return {}
        try:
            return await self.store.count_by_status()
        except (RuntimeError, sqlite3.Error, InferError) as exc:  # closing, or the store away: no counts this time
            log.debug("asynchronous job counts unavailable: %s", exc)
            return {}

    # -- what the worker calls -----------------------------------------------------------------
    def _finished(self, job: Job) -> None:
        if job.callback_url is not None:
            self.callbacks.notify(job.id)

    async def _load_body(self, job: Job) -> bytes:
        if job.input_location is not None:
            return await read_location(job.input_location, self.config.max_body_bytes, self.input_roots)
        if job.request_file is not None:
            return await self.files.read(job.request_file)
        if job.request_inline is not None:  # claim() brought it along
            return job.request_inline
        return await self.store.inline(job.id, "request") or b""

    async def _infer(self, job: Job, body: bytes) -> tuple[bytes, int | None]:
        """The body the synchronous route would answer (the same call on the same inference path): ``infer``'s
        for a V2 request, ``generate``'s for a generate request (``text_input`` or ``messages``)."""
        if generate_body.is_generate_body(body, job.header_length):
            request = generate_body.parse(body, job.model, job.version)
            events = await self.dataplane.generate(request)
            return orjson.dumps(await generate_body.whole(events, job.model, job.version)), None
        return await self.dataplane.infer(V2Body(body, job.header_length, job.model, job.version))
