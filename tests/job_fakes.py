"""Jobs as the asynchronous-inference tests submit them."""

from __future__ import annotations

from typing import Any

from inferd.jobs.store import NewJob, Payload


def new_job(job_id: str, model: str = "m", body: bytes = b"{}", **kwargs: Any) -> NewJob:
    return NewJob(job_id, model, None, f"digest-{job_id}-{body!r}", Payload(len(body), inline=body), **kwargs)
