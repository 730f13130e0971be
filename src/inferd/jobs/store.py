"""The job store seam: what the asynchronous queue needs from durable storage, and nothing about how.

The embedded default is :class:`inferd.jobs.sqlite_store.SqliteJobStore`; a store shared by several servers
(PostgreSQL) implements the same :class:`JobStore` protocol. Every method is a coroutine: an implementation
does its blocking work elsewhere (a writer thread, a connection pool) and never on the event loop.

Rules every implementation keeps:

- ``submit`` returns only once the job is durable (its 202 may then go out); the same public id from the same
  owner twice returns the job that is already there, untouched. Public ids are unique per owner, not globally:
  two API keys may both call a job ``order-17``; ``id`` is the store's own key, unique across owners.
- ``claim`` moves queued jobs whose ``not_before`` has passed to ``running`` and counts the attempt.
- ``complete`` and ``fail`` change a job only while it is still ``running`` with the same attempt number, so
  a stale run (one that was recovered and run again) can never store a second result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from inferd.jobs.batch_store import BatchStore

JOB_COLUMNS = ("id, model, version, status, created_at, updated_at, started_at, finished_at, attempts, not_before, "
               "error_code, error, digest, header_length, input_location, request_size, request_file, result_size, "
               "result_file, result_header_length, callback_url, callback_state, owner, public_id")
"""The columns of a job record that :func:`job_from_row` reads, in its order (the same in every SQL store)."""


class StoreOpenError(Exception):
    """The job store cannot be opened (a schema this inferd cannot use, a database it cannot reach): asynchronous
    inference stays off, saying why."""


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Finished longer ago than the retention TTL: its payloads are deleted, the record remains for a while."""

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class CallbackState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Payload:
    """A request or result body: ``inline`` bytes for small ones, else the name of a file the
    :class:`~inferd.jobs.payloads.PayloadFiles` keep."""

    size: int
    inline: bytes | None = None
    file: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a submission stores."""

    id: str
    """The store's key for the job, unique across owners (a random one; see ``public_id``)."""
    model: str
    version: str | None
    digest: str
    """Fingerprint of model, version and body (or input location): the same id with another digest is a conflict."""
    body: Payload | None
    """The request body; None when ``input_location`` names where to read it."""
    header_length: int | None = None
    """``Inference-Header-Content-Length`` of the body (binary tensor extension), None for plain JSON."""
    input_location: str | None = None
    callback_url: str | None = None
    owner: str | None = None
    """Name of the API key that submitted it (None when the server runs without keys)."""
    public_id: str | None = None
    """The id the caller uses (its ``Inference-Id``, or ``id`` when None): unique per owner."""


@dataclass(frozen=True, slots=True)
class JobResult:
    """Exactly the body the synchronous route returned, and its JSON header length when it is binary."""

    body: Payload
    header_length: int | None = None


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    at: float
    status_code: int | None
    error: str | None = None


@dataclass(slots=True)
class Job:
    """A job's record. Payload bytes are not loaded: ``request_file``/``result_file`` name large ones, and
    :meth:`JobStore.inline` fetches small ones."""

    id: str
    """The store's key (what the store's methods take); callers know the job by ``public_id``."""
    model: str
    version: str | None
    status: JobStatus
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    not_before: float = 0.0
    error_code: str | None = None
    error: str | None = None
    digest: str = ""
    header_length: int | None = None
    input_location: str | None = None
    request_size: int | None = None
    request_file: str | None = None
    result_size: int | None = None
    result_file: str | None = None
    result_header_length: int | None = None
    callback_url: str | None = None
    callback_state: CallbackState | None = None
    callback_attempts: list[CallbackAttempt] = field(default_factory=list)
    owner: str | None = None
    """Name of the API key that submitted it: only that key, or an ``admin`` one, sees the job."""
    request_inline: bytes | None = field(default=None, repr=False)
    """The inline request body, filled in only by :meth:`JobStore.claim` (the worker needs it next)."""
    public_id: str = ""
    """The id its owner gave it (or was given at submission): unique per owner; ``id`` when empty."""

    def __post_init__(self) -> None:
        if not self.public_id:
            self.public_id = self.id

    @property
    def has_result(self) -> bool:
        return self.result_size is not None

    def to_dict(self, base_url: str = "") -> dict[str, Any]:
        """The status document (``GET status_url`` and callback body). ``base_url`` makes the links absolute."""
        links = job_links(self.public_id, base_url)
        callback: dict[str, Any] | None = None
        if self.callback_url:
            callback = {"url": self.callback_url, "state": self.callback_state and self.callback_state.value,
                        "attempts": [{"at": iso(a.at), "status_code": a.status_code, "error": a.error}
                                     for a in self.callback_attempts]}
        return {
            "id": self.public_id, "owner": self.owner, "model_name": self.model, "model_version": self.version,
            "status": self.status.value,
            "created_at": iso(self.created_at), "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at), "updated_at": iso(self.updated_at),
            "attempts": self.attempts,
            "error": {"code": self.error_code, "message": self.error} if self.error is not None else None,
            **links, "callback": callback,
        }


def job_links(job_id: str, base_url: str = "") -> dict[str, str]:
    base = f"{base_url.rstrip('/')}/v2/jobs/{job_id}"
    return {"status_url": base, "result_url": f"{base}/result"}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_from_row(row: tuple[Any, ...]) -> Job:
    """A :class:`Job` from the :data:`JOB_COLUMNS` of a row."""
    (job_id, model, version, status, created_at, updated_at, started_at, finished_at, attempts, not_before,
     error_code, error, digest, header_length, input_location, request_size, request_file, result_size,
     result_file, result_header_length, callback_url, callback_state, owner, public_id) = row
    return Job(job_id, model, version, JobStatus(status), created_at, updated_at, started_at, finished_at, attempts,
               not_before, error_code, error, digest, header_length, input_location, request_size, request_file,
               result_size, result_file, result_header_length, callback_url,
               CallbackState(callback_state) if callback_state else None, owner=owner or None, public_id=public_id)


class JobStore(BatchStore, Protocol):
    """Durable state of the asynchronous queue (see the module docstring for the rules), and of the batch jobs
    submitted over HTTP (:class:`~inferd.jobs.batch_store.BatchStore`)."""

    payloads_inline: bool
    """True when the store keeps every body in itself (a store shared by servers on several machines, which
    cannot read one another's payload files); False: large bodies go to the state folder's payload files."""

    async def open(self) -> None:
        """Create or open the store."""

    async def close(self) -> None: ...

    async def submit(self, job: NewJob, now: float) -> tuple[Job, bool]:
        """Store a new job durably. Returns the stored job and whether it was created (False: the id existed)."""

    async def get(self, job_id: str) -> Job | None:
        """The job whose store key is ``job_id``."""

    async def find(self, public_id: str, owner: str | None = None) -> list[Job]:
        """The jobs their owners call ``public_id``: ``owner``'s (at most one; ``""`` for jobs submitted without
        a key), or every owner's when None. Oldest first."""

    async def list_jobs(self, *, status: JobStatus | None = None, model: str | None = None,
                        limit: int = 100, owner: str | None = None) -> list[Job]:
        """Newest first; only ``owner``'s jobs when given (``""``: those submitted without a key)."""

    async def inline(self, job_id: str, which: Literal["request", "result"]) -> bytes | None:
        """The inline bytes of a job's request or result (None when it is kept as a file, or absent)."""

    async def queued_models(self) -> set[str]:
        """Models that have queued jobs."""

    async def count_by_status(self) -> dict[tuple[str, str, str], int]:
        """(model, version or "", status) → number of jobs, for the metrics."""

    async def claim(self, slots: Mapping[str, int], now: float) -> list[Job]:
        """Up to ``slots[model]`` due jobs of each model, oldest first, moved to running with one more attempt;
        with ``request_inline`` filled in."""

    async def complete(self, job_id: str, attempt: int, result: JobResult, now: float) -> bool:
        """Store the result and mark the job succeeded, if it is still running as ``attempt``."""

    async def fail(self, job_id: str, attempt: int, code: str, message: str, retry_at: float | None,
                   now: float) -> bool:
        """Record an error on a running ``attempt``: requeue it for ``retry_at``, or (None) end it failed."""

    async def release(self, job_id: str, attempt: int, now: float) -> bool:
        """Put a running job back in the queue without counting the attempt (a graceful server stop)."""

    async def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a queued job. Returns the job afterwards (its status tells whether it was cancelled), or None."""

    async def recover(self, now: float) -> int:
        """At start: jobs left running by a server that died go back to the queue, their attempts counted."""

    async def pending_callbacks(self) -> list[Job]:
        """Jobs whose callback is pending and held by no other live server."""

    async def claim_callback(self, job_id: str, now: float) -> Job | None:
        """Take the delivery of a job's pending callback (with its attempts so far), or None when it is not
        pending or another live server delivers it: each final status is sent by one server."""

    async def record_callback(self, job_id: str, attempt: CallbackAttempt, state: CallbackState) -> None:
        """Record one delivery attempt and the callback's state after it."""

    async def expire(self, finished_before: float, now: float) -> list[str]:
        """Finished jobs older than ``finished_before`` become ``expired`` and lose their payloads; records
        already expired before it are deleted, and so are the records of batch jobs that ended before it. Returns
        the payload file names to delete."""

    async def payload_files(self) -> set[str]:
        """Every payload file name a job refers to (to find files a crash left behind)."""
