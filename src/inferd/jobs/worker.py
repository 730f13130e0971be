"""The worker: claims queued jobs, runs them through the DataPlane, stores results, retries failures.

Each model runs at most ``concurrency_per_model`` jobs at once, so a backlog of asynchronous jobs holds only
that many places in the model's scheduler queue and real-time requests interleave with it instead of waiting
behind it.

During a flood of submissions (``flooded()`` true: the service is holding submissions back) the worker claims
more than it runs, up to ``claim_ahead`` times its places per model: a claim is a write that waits its turn
behind the flood's, and claiming only as many jobs as there are free places capped completion at about 50 jobs/s
during a flood against 600+ once it ended. The jobs past the places wait, already ``running`` in the store (so
no longer cancellable), for a place. :attr:`Worker.behind` tells the service when there is more queued work than
places, so that it bounds submissions meanwhile (:data:`inferd.jobs.service.INTAKE_WHEN_BEHIND`).

Execution is at-least-once: a job that was running when the server died is claimed again after a restart
(:meth:`JobStore.recover`), and an attempt that finishes after its job was claimed again cannot store a second
result (the store's writes are conditional on the attempt number).

Storing an outcome (the result's payload file, the result, a retry or a failure) that fails, on a full disk
say, is tried again with backoff until it is stored, so a job whose inference finished ends as soon as there is
space again, without a restart, rather than staying ``running`` until the next recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from inferd.backoff import doubling_delay
from inferd.errors import ErrorCode, InferError
from inferd.jobs.payloads import PayloadFiles
from inferd.jobs.storage import is_disk_full
from inferd.jobs.store import Job, JobResult, JobStore

log = logging.getLogger(__name__)

STOP_CLAIM_WAIT_S = 10.0
"""How long a stopping worker lets a claim in flight finish before it cancels it (a store that hangs)."""

T = TypeVar("T")

RETRYABLE = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL, ErrorCode.DEADLINE_EXCEEDED,
                       ErrorCode.RESOURCE_EXHAUSTED})
"""Errors that may pass on another attempt (a model not loaded yet, a worker process that died, a full queue).
A request the model's signature refuses (INVALID_ARGUMENT) or an unknown model fails at once."""

InferFn = Callable[[Job, bytes], Awaitable[tuple[bytes, int | None]]]
"""Runs a job's request body; returns the response body and its JSON header length (None: plain JSON)."""
BodyFn = Callable[[Job], Awaitable[bytes]]
"""Loads a job's request body (inline, payload file or input location)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 1.0
    """Wait before the second attempt; it doubles for each later one."""
    max_backoff_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return doubling_delay(self.backoff_s, attempt, self.max_backoff_s)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency_per_model: int = 2
    retry: RetryPolicy = RetryPolicy()
    inline_limit: int = 1024 * 1024
    """Results up to this size stay inline in the store; larger ones go to payload files."""
    poll_s: float = 0.25
    """How often an idle worker looks for retries that came due."""
    store_retry_s: float = 0.5
    """Wait before writing a job's outcome again after the write failed (a full disk); it doubles up to
    ``store_retry_max_s``."""
    store_retry_max_s: float = 10.0
    claim_ahead: int = 16
    """Jobs claimed per model during a flood, in units of ``concurrency_per_model``: the ones past the running
    places wait their turn in this worker, ``running`` (and not cancellable) meanwhile."""


class Worker:
    def __init__(self, store: JobStore, files: PayloadFiles, infer: InferFn, load_body: BodyFn,
                 options: WorkerOptions | None = None, on_finished: Callable[[Job], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        options = options or WorkerOptions()
        self._store = store
        self._files = files
        self._infer = infer
        self._load_body = load_body
        self._limit = options.concurrency_per_model
        self._claim_limit = options.concurrency_per_model * max(options.claim_ahead, 1)
        self._waiting = 0
        self.flooded: Callable[[], bool] = lambda: False
        """Whether submissions pour in faster than they are stored (set by the service): claim ahead then."""
        self._backlog = False
        """The last claim got every job it asked for: more are queued than this worker has places for."""
        self._places: dict[str, asyncio.Semaphore] = {}
        """Per model: the ``concurrency_per_model`` places its claimed jobs take turns at."""
        self._retry = options.retry
        self._inline_limit = options.inline_limit
        self._on_finished = on_finished or (lambda _job: None)
        self._poll_s = options.poll_s
        self._store_retry_s = options.store_retry_s
        self._store_retry_max_s = options.store_retry_max_s
        self._claim_failing = False
        self._clock = clock
        self._wake = asyncio.Event()
        self._models: set[str] = set()
        self._running: dict[str, int] = {}
        """Per model: jobs claimed whose inference has not returned yet (running or waiting for a place)."""
        self._holding: set[str] = set()
        """Jobs that count in ``_running`` (until their inference returns)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsettled: dict[str, Job] = {}
        """Jobs claimed whose attempt has not ended (stored an outcome or gone back to the queue)."""
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="inferd-jobs-worker")

    def wake(self, model: str | None = None) -> None:
        """A job was queued (for ``model``) or a slot freed: look at the queue now."""
        if model is not None:
            self._models.add(model)
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def behind(self) -> bool:
        """Whether there is more queued work than places: claimed jobs wait for one, or the last claim was full."""
        return self._waiting > 0 or self._backlog

    async def stop(self) -> None:
        """Stop claiming; jobs still running are cancelled and go back to the queue without losing an attempt."""
        self._stopping = True
        if self._loop_task is not None:
            # A claim in flight is let finish (it is one short transaction): cancelled between its commit and its
            # answer, the jobs it took would stay running, claimed by nobody, until the next start recovers them.
            self._wake.set()
            done, _ = await asyncio.wait([self._loop_task], timeout=STOP_CLAIM_WAIT_S)
            if not done:
                self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in list(self._unsettled.values()):  # cancelled before their first step: nothing released them
            with contextlib.suppress(Exception):
                await self._store.release(job.id, job.attempts, self._clock())
        self._unsettled.clear()

    async def _run(self) -> None:
        self._models |= await self._store.queued_models()
        while not self._stopping:
            self._wake.clear()
            limit = self._claim_limit if self.flooded() else self._limit
            slots = {m: limit - self._running.get(m, 0) for m in self._models}
            try:
                jobs = await self._store.claim(slots, self._clock())
            except Exception as exc:  # a store hiccup or a full disk must not end the worker: wait, try again
                self._claim_failed(exc)
                jobs = []
            else:
                if self._claim_failing:
                    self._claim_failing = False
                    log.info("claiming asynchronous jobs works again")
            if any(n > 0 for n in slots.values()):
                got = Counter(job.model for job in jobs)
                self._backlog = any(got[m] >= n for m, n in slots.items() if n > 0)
            for job in jobs:
                self._spawn(job)
            if jobs:
                continue
            await self._idle()

    def _claim_failed(self, exc: Exception) -> None:
        """Log the first failure of a run of them (with its traceback unless the disk is full), not every poll."""
        if self._claim_failing:
            log.debug("claiming jobs failed again: %s", exc)
            return
        self._claim_failing = True
        if is_disk_full(exc):
            log.warning("claiming jobs failed: %s; trying again until there is space", exc)
        else:
            log.error("claiming jobs failed; trying again", exc_info=exc)

    async def _idle(self) -> None:
        try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the wake-up
            async with asyncio.timeout(self._poll_s):
                await self._wake.wait()
        except TimeoutError:  # idle: the next claim picks up retries that came due
            try:  # and models with nothing queued are forgotten
                queued = await self._store.queued_models()
            except Exception:
                log.exception("listing queued models failed")
                return
            self._models = queued | {m for m, n in self._running.items() if n}

    def _spawn(self, job: Job) -> None:
        self._running[job.model] = self._running.get(job.model, 0) + 1
        self._holding.add(job.id)
        self._unsettled[job.id] = job
        task = asyncio.create_task(self._attempt(job), name=f"inferd-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, job: Job) -> None:
        try:
            await self._execute(job)
        except asyncio.CancelledError:  # the server is stopping: back to the queue, attempt not counted
            with contextlib.suppress(Exception):
                await self._store.release(job.id, job.attempts, self._clock())
            raise
        except Exception:  # storing the outcome failed; the job stays running until the next recovery
            log.exception("job %s: storing its outcome failed", job.id)
        finally:
            self._unsettled.pop(job.id, None)
            self._free_slot(job)

    def _free_slot(self, job: Job) -> None:
        """The worker may claim another job of the model. Called as soon as inference returns, so that storing
        this job's outcome and claiming the next one share a commit."""
        if job.id in self._holding:
            self._holding.discard(job.id)
            self._running[job.model] -= 1
            self._wake.set()

    async def _execute(self, job: Job) -> None:
        if job.attempts > self._retry.max_attempts:  # recovered after dying with its last attempt
            cause = job.error or "the server stopped while it ran"
            await self._finish_failed(job, job.error_code or ErrorCode.INTERNAL.value,
                                      f"gave up after {job.attempts - 1} attempts: {cause}")
            return
        try:
            self._waiting += 1
            try:
                await self._place(job.model).acquire()
            finally:
                self._waiting -= 1
            try:
                body = await self._load_body(job)
                content, header_length = await self._infer(job, body)
                del body  # the request is held only while inference needs it
            finally:
                self._place(job.model).release()
        except InferError as exc:
            self._free_slot(job)
            await self._failed(job, exc.code.value, exc.message, exc.code in RETRYABLE)
            return
        except Exception as exc:
            self._free_slot(job)
            log.exception("job %s failed unexpectedly", job.id)
            await self._failed(job, ErrorCode.INTERNAL.value, f"internal error: {type(exc).__name__}: {exc}", True)
            return
        self._free_slot(job)
        payload = await self._until_stored(job, "result", lambda: self._files.store(content, self._inline_limit,
                                                                                    "result"))
        result = JobResult(payload, header_length)
        if await self._until_stored(job, "result",
                                    lambda: self._store.complete(job.id, job.attempts, result, self._clock())):
            self._on_finished(job)
        elif payload.file is not None:  # this attempt is stale: the job moved on without it
            self._files.delete([payload.file])

    def _place(self, model: str) -> asyncio.Semaphore:
        place = self._places.get(model)
        if place is None:
            place = self._places[model] = asyncio.Semaphore(self._limit)
        return place

    async def _until_stored(self, job: Job, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """``write()`` until it succeeds: a write that fails (a full disk, an I/O error) is tried again, waiting
        ``store_retry_s`` doubling up to ``store_retry_max_s``. Ends when it is stored or the worker stops (the
        job then goes back to the queue like any job running at a stop)."""
        failures = 0
        while True:
            try:
                stored = await write()
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("job %s: storing its %s failed (%s); trying again until it is stored", job.id,
                                what, exc, exc_info=None if is_disk_full(exc) else exc)
                await asyncio.sleep(doubling_delay(self._store_retry_s, failures, self._store_retry_max_s))
                continue
            if failures:
                log.info("job %s: its %s is stored after %d failed tries", job.id, what, failures)
            return stored

    async def _failed(self, job: Job, code: str, message: str, retryable: bool) -> None:
        if not retryable or job.attempts >= self._retry.max_attempts:
            await self._finish_failed(job, code, message)
            return
        now = self._clock()
        retry_at = now + self._retry.delay(job.attempts)
        log.info("job %s attempt %d failed (%s: %s); retrying in %.1f s", job.id, job.attempts, code, message,
                 retry_at - now)
        await self._until_stored(job, "retry", lambda: self._store.fail(job.id, job.attempts, code, message,
                                                                        retry_at, now))

    async def _finish_failed(self, job: Job, code: str, message: str) -> None:
        if await self._until_stored(job, "failure", lambda: self._store.fail(job.id, job.attempts, code, message,
                                                                             None, self._clock())):
            self._on_finished(job)
