"""Asynchronous inference: a durable queue of inference jobs, drained through the DataPlane (docs/async.md)."""

from inferd.jobs.service import AsyncConfig, AsyncService
from inferd.jobs.store import Job, JobStatus, JobStore, NewJob

__all__ = ["AsyncConfig", "AsyncService", "Job", "JobStatus", "JobStore", "NewJob"]
