"""Batch jobs over REST: ``POST /v2/batch/jobs`` starts one (202 with its id, once the job store holds it),
``GET /v2/batch/jobs/{id}`` reports its state and progress (rows done and total, rows/s, ETA, then the summary or
the error), ``DELETE /v2/batch/jobs/{id}`` cancels a queued or running one, and ``GET /v2/batch/jobs`` lists
them. Paths must lie under the ``batch_roots`` setting (403 otherwise)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from inferd.batch.options import BatchError, BatchOptions, parse_max_errors
from inferd.batch.server_jobs import BatchJobs, RefusedError
from inferd.jobs.batch_store import BatchRecord
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.responses import json_response

MAX_BODY = 64 * 1024
MAX_LIST = 10_000


class BatchJobRequest(BaseModel):
    """The body of ``POST /v2/batch/jobs``: what ``inferd batch run`` takes, as JSON."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    input: str
    output: str
    version: str | None = None
    batch_size: int = 1024
    concurrency: int = 2
    timeout_s: float | None = 300.0
    retries: int = 2
    max_errors: int | float | str | None = None
    join: bool = False
    key: str | None = None
    mapping: dict[str, str] = {}
    format: str | None = None
    restart: bool = False

    def options(self) -> BatchOptions:
        limit = parse_max_errors(self.max_errors) if isinstance(self.max_errors, str) else self.max_errors
        return BatchOptions(batch_size=self.batch_size, concurrency=self.concurrency, timeout_s=self.timeout_s,
                            retries=self.retries, max_errors=limit, join=self.join, key=self.key,
                            mapping=dict(self.mapping), output_format=self.format, restart=self.restart,
                            model_version=self.version)


def batch_router(jobs: BatchJobs) -> APIRouter:
    router = APIRouter(tags=["Batch jobs"])

    docs = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": BatchJobRequest.model_json_schema()}}}}

    @router.post("/v2/batch/jobs", status_code=202, summary="Start a batch job", openapi_extra=docs)
    async def submit(request: Request) -> Response:
        body = await read_body(request, BodyLimit(MAX_BODY, "the most a batch job request may hold"))
        job = await _submit(jobs, body)
        url = f"/v2/batch/jobs/{job.id}"
        return json_response({"id": job.id, "status_url": url}, status=202, headers={"Location": url})

    @router.get("/v2/batch/jobs/{job_id}", summary="A batch job's state and progress")
    async def status(job_id: str) -> Response:
        job = await jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"no batch job {job_id!r}")
        return json_response(job.status())

    @router.delete("/v2/batch/jobs/{job_id}", summary="Cancel a queued or running batch job")
    async def cancel(job_id: str) -> Response:
        job = await jobs.cancel(job_id)
        if job is None:
            raise HTTPError(404, f"no batch job {job_id!r}")
        if job.state != "cancelled":
            raise HTTPError(409, f"batch job {job_id!r} is {job.state}; only a queued or running job can be cancelled")
        return json_response(job.status())

    @router.get("/v2/batch/jobs", summary="The batch jobs in the job store, newest first")
    async def listing(limit: int = 100) -> Response:
        if not 1 <= limit <= MAX_LIST:
            raise HTTPError(400, f"limit must be between 1 and {MAX_LIST}, got {limit}")
        return json_response({"jobs": [j.status() for j in await jobs.list(limit)]})

    return router


async def _submit(jobs: BatchJobs, body: bytes) -> BatchRecord:
    try:
        spec = BatchJobRequest.model_validate(orjson.loads(body or b"null"))
        return await jobs.submit(spec.model, spec.input, spec.output, spec.options())
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"the body is not JSON: {exc}") from None
    except ValidationError as exc:
        raise HTTPError(400, f"invalid batch job: {_validation_message(exc)}") from None
    except (BatchError, ValueError) as exc:
        raise HTTPError(400, str(exc)) from None
    except RefusedError as exc:
        raise HTTPError(exc.status, exc.message) from None


def _validation_message(exc: ValidationError) -> str:
    parts: list[str] = []
    for error in exc.errors():
        where: Any = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
