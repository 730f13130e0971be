"""Asynchronous inference over REST: submit a request and get 202 at once, then poll its status and fetch the
result, which is exactly the body the synchronous ``infer`` route would have returned.

Request headers on ``infer-async`` (besides what ``infer`` takes, such as ``Inference-Header-Content-Length``):

- ``Inference-Id``: an idempotency key and the job's id, in the submitting key's own namespace (see
  :mod:`~inferd.server.rest.job_access`). The same id again returns the same job (200); with a different
  request, 409.
- ``Inference-Id-From-Body: true``: take that id from the V2 ``id`` field of the JSON body instead (a body kept
  inline only). Without this header the body's ``id`` is only the response's ``id``, never the job's key.
- ``Inference-Callback-Url``: where to POST the job's status when it ends; a destination the
  ``async_callback_allowed`` setting does not allow gets 400.
- ``Inference-Input-Location``: read the request body from this file or URL (under ``async_input_roots``)
  instead of the request's own body.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from inferd.calls import ROUTE_KEY, ROUTE_VARIANT, parse_version
from inferd.codecs import v2_binary
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError, invalid
from inferd.jobs.inputs import check_location, location_size
from inferd.jobs.payloads import BodyTooLargeError
from inferd.jobs.service import AsyncService
from inferd.jobs.store import Job, JobStatus, NewJob, Payload, job_links
from inferd.server.rest.body import BodyLimit
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.job_access import JobAccess
from inferd.server.rest.openapi import ACCEPTED_RESPONSE, ASYNC_HEADERS, INFER_BODY
from inferd.server.rest.responses import error_response, json_response
from inferd.server.routing_headers import GRPC_FORCED, GRPC_KEY
from inferd.server.status import HTTP_STATUS

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_LIST = 1000


def async_router(dataplane: DataPlane, service: AsyncService) -> APIRouter:
    router = APIRouter(tags=["Asynchronous inference"])
    _submit_routes(router, dataplane, service)
    _job_routes(router, service)
    return router


def _submit_routes(router: APIRouter, dataplane: DataPlane, service: AsyncService) -> None:

    docs = {"requestBody": INFER_BODY, "responses": {"202": ACCEPTED_RESPONSE}, "parameters": ASYNC_HEADERS}

    @router.post("/v2/models/{model}/infer-async", summary="Submit an asynchronous inference", status_code=202,
                 openapi_extra=docs)
    @router.post("/v2/models/{model}/versions/{version}/infer-async", status_code=202,
                 summary="Submit an asynchronous inference on a version", openapi_extra=docs)
    async def submit(request: Request, model: str, version: str | None = None) -> Response:
        call = Submission(request.headers, request.stream(), service.config.public_url,
                          JobAccess.of(request.scope).owner)
        status, reply = await accept(dataplane, service, model, version, call)
        return json_response(reply, status, headers={"Location": reply["status_url"]})


@dataclass(frozen=True, slots=True)
class Submission:
    """One ``infer-async`` call as the transports hand it over."""

    headers: Mapping[str, str]
    """Looked up by lower-case name."""
    chunks: AsyncIterator[bytes]
    """The request body."""
    base_url: str
    """What the links start with: the ``public_url`` setting, or empty (paths), never the ``Host`` header."""
    owner: str | None = None
    """The API key that submits (None without keys): only it, or an admin key, sees the job."""


async def accept(dataplane: DataPlane, service: AsyncService, model: str, version: str | None,
                 call: Submission) -> tuple[int, dict[str, str]]:
    """Store a submission durably. Returns 202 (new) or 200 (the same id again from the same owner) and
    ``{id, status_url, result_url}``; the same id with another request is a conflict (409)."""
    service.check()
    _check_model(dataplane, model, version)
    _check_routing_headers(dataplane, model, call.headers)
    try:
        new = await _new_job(call.headers, call.chunks, service, model, version, call.owner)
    except OSError as exc:  # writing a large body to a payload file
        refusal = service.disk_full(exc)
        if refusal is None:
            raise
        raise refusal from exc
    try:
        job, created = await service.submit(new)
    except BaseException:
        _discard(service, new)
        raise
    if not created:
        _discard(service, new)
        if job.digest != new.digest:
            raise HTTPError(409, f"job {job.public_id!r} already exists with a different request")
    return 202 if created else 200, {"id": job.public_id, **job_links(job.public_id, call.base_url)}


def _job_routes(router: APIRouter, service: AsyncService) -> None:

    @router.get("/v2/jobs", summary="List asynchronous jobs, newest first")
    async def list_jobs(request: Request, status: str | None = None, model: str | None = None,
                        limit: int = 100, owner: str | None = None) -> Response:
        service.check()
        if status is not None and status not in JobStatus.__members__.values():
            raise invalid(f"unknown status {status!r}; one of {', '.join(s.value for s in JobStatus)}")
        if not 1 <= limit <= MAX_LIST:
            raise invalid(f"limit must be between 1 and {MAX_LIST}, got {limit}")
        jobs = await service.store.list_jobs(status=JobStatus(status) if status else None, model=model, limit=limit,
                                             owner=JobAccess.of(request.scope).listing_owner(owner))
        return json_response({"jobs": [j.to_dict(service.config.public_url) for j in jobs]})

    @router.get("/v2/jobs/{job_id}", summary="Status of an asynchronous job")
    async def status(request: Request, job_id: str, owner: str | None = None) -> Response:
        job = await _job(service, request, job_id, owner)
        return json_response(job.to_dict(service.config.public_url))

    @router.get("/v2/jobs/{job_id}/result", summary="Result of an asynchronous job (the synchronous response)")
    async def result(request: Request, job_id: str, owner: str | None = None) -> Response:
        return await _result(service, await _job(service, request, job_id, owner))

    @router.delete("/v2/jobs/{job_id}", summary="Cancel a queued asynchronous job")
    async def cancel(request: Request, job_id: str, owner: str | None = None) -> Response:
        job = await service.cancel((await _job(service, request, job_id, owner)).id)
        if job is None:
            raise HTTPError(404, f"no job {job_id!r}")
        if job.status is not JobStatus.CANCELLED:
            raise HTTPError(409, f"job {job_id!r} is {job.status.value}; only a queued job can be cancelled")
        return json_response(job.to_dict(service.config.public_url))


def _check_model(dataplane: DataPlane, model: str, version: str | None) -> None:
    """NOT_FOUND (nothing stored) for an unknown model or version, with the synchronous route's message. A
    known model that is not ready now is accepted: its job retries while it is unavailable. An endpoint's name
    is accepted: its variant is picked when the job runs."""
    if dataplane.endpoints is not None and model in dataplane.endpoints.table.endpoints:
        return
    try:
        dataplane.repository.get(model, parse_version(version))
    except InferError as exc:
        if exc.code is not ErrorCode.UNAVAILABLE and not dataplane.loadable(model):  # on demand: it loads
            raise


def _check_routing_headers(dataplane: DataPlane, model: str, headers: Mapping[str, str]) -> None:
    """INVALID_ARGUMENT for a job to an endpoint that forces a variant or a route key by a header: a job keeps
    its body, not its headers, and its variant is picked when it runs; the body's parameters ``inferd_variant``
    and ``inferd_route_key`` say the same and are kept with it."""
    if dataplane.endpoints is None or model not in dataplane.endpoints.table.endpoints:
        return
    named = sorted(name for name in (*GRPC_FORCED, GRPC_KEY) if name in headers)
    if named:
        raise invalid(f"an asynchronous job to endpoint {model!r} cannot take header {named[0]!r}: a job keeps its "
                      f"body, not its headers; put \"{ROUTE_VARIANT}\" (a variant) or \"{ROUTE_KEY}\" (a route key) "
                      "in the body's parameters")


async def _new_job(headers: Mapping[str, str], chunks: AsyncIterator[bytes], service: AsyncService, model: str,
                   version: str | None, owner: str | None) -> NewJob:
    header_length = v2_binary.parse_header_length(headers.get(v2_binary.HEADER_LENGTH))
    callback = service.callback_for(model, headers.get("inference-callback-url"))  # checked before the body
    location = headers.get("inference-input-location")
    key = headers.get("inference-id")
    from_body = _id_from_body(headers.get("inference-id-from-body"), key, location)
    if key is not None:
        _check_id(key)
    if location is not None:
        location = _input_location(service, location)
        body, digest_of = None, f"location:{location}"
    else:
        body, sha = await _read_body(headers, chunks, service)
        digest_of = f"body:{sha}"
        if from_body:
            try:
                key = _body_id(body, header_length, service.config.inline_payload_bytes)
            except InferError:
                _discard_body(service, body)
                raise
    digest = hashlib.sha256(f"{owner}\0{model}\0{version}\0{header_length}\0{digest_of}".encode()).hexdigest()
    return NewJob(uuid.uuid4().hex, model, version, digest, body, header_length, location,
                  callback, owner, public_id=key)


def _check_id(key: str) -> None:
    if not _JOB_ID.match(key):
        raise invalid(f"inference id {key!r} cannot name a job: use 1-128 letters, digits, '.', '_', ':' or '-'")


def _id_from_body(flag: str | None, key: str | None, location: str | None) -> bool:
    """Whether ``Inference-Id-From-Body`` asks for the body's V2 ``id`` as the job's id."""
    if flag is None or flag.strip().lower() in ("false", "0", "no"):
        return False
    if flag.strip().lower() not in ("true", "1", "yes"):
        raise invalid(f"Inference-Id-From-Body must be true or false, got {flag!r}")
    if key is not None:
        raise invalid("give the job's id either as Inference-Id or with Inference-Id-From-Body: true, not both")
    if location is not None:
        raise invalid("Inference-Id-From-Body: true needs the request in the body, not Inference-Input-Location; "
                      "send Inference-Id")
    return True


def _body_id(body: Payload, header_length: int | None, inline_limit: int) -> str:
    """The V2 ``id`` of the body, which ``Inference-Id-From-Body: true`` makes the job's id."""
    if body.inline is None:
        raise invalid(f"Inference-Id-From-Body: true reads the id only from bodies up to {inline_limit} bytes "
                      "(async_inline_payload_bytes); send Inference-Id")
    found = _v2_id(body.inline, header_length)
    if found is None:
        raise invalid('Inference-Id-From-Body: true, but the body has no string "id" field')
    _check_id(found)
    return found


async def _read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], service: AsyncService,
                     ) -> tuple[Payload, str]:
    """Stream the body (inflated, if it is compressed) into memory (small) or a payload file (large), refusing more
    than the limit with 413."""
    limit = BodyLimit(service.config.max_body_bytes, "async_max_body_bytes")
    limit.check_declared(headers.get("content-length"))
    inflated = limit.inflated(chunks, headers.get("content-encoding"))
    writer = service.files.writer(service.config.inline_payload_bytes, limit.limit)
    try:
        async for chunk in inflated:
            writer.write(chunk)
        payload = await writer.finish()
    except BodyTooLargeError:
        raise limit.error() from None
    except BaseException:  # the client went away mid-upload, or the server is stopping
        writer.discard()
        raise
    return payload, writer.digest.hexdigest()


def _v2_id(body: bytes, header_length: int | None) -> str | None:
    """The V2 ``id`` of a small JSON request, if it has one (a body that is not JSON fails when it runs)."""
    try:
        payload = orjson.loads(body if header_length is None else body[:header_length])
    except orjson.JSONDecodeError:
        return None
    found = payload.get("id") if isinstance(payload, dict) else None
    return found if isinstance(found, str) and found else None


def _input_location(service: AsyncService, location: str) -> str:
    checked = check_location(location, service.config.input_roots)
    size = location_size(checked)
    limit = service.config.max_body_bytes
    if size is not None and size > limit:
        raise HTTPError(413, f"input file of {size} bytes is over the limit of {limit} bytes "
                             "for asynchronous inference")
    return checked


def _discard(service: AsyncService, job: NewJob) -> None:
    _discard_body(service, job.body)


def _discard_body(service: AsyncService, body: Payload | None) -> None:
    if body is not None and body.file is not None:
        service.files.delete([body.file])


async def _job(service: AsyncService, request: Request, job_id: str, owner: str | None) -> Job:
    """The job the caller calls ``job_id``, if it may see it (:class:`JobAccess`); 404 otherwise."""
    service.check()
    return await JobAccess.of(request.scope).job(service.store, job_id, owner)


async def _result(service: AsyncService, job: Job) -> Response:
    if job.status is JobStatus.SUCCEEDED and job.has_result:
        headers: dict[str, Any] = {}
        media_type = "application/json"
        if job.result_header_length is not None:
            media_type = v2_binary.CONTENT_TYPE_BINARY
            headers[v2_binary.HEADER_LENGTH] = str(job.result_header_length)
        if job.result_file is not None:
            return FileResponse(service.files.path(job.result_file), media_type=media_type, headers=headers)
        body = await service.store.inline(job.id, "result") or b""
        return Response(body, media_type=media_type, headers=headers)
    if job.status is JobStatus.FAILED:
        code = ErrorCode.__members__.get(job.error_code or "", ErrorCode.INTERNAL)
        return error_response(HTTP_STATUS[code], job.error or "the job failed")
    if job.status is JobStatus.EXPIRED:
        return error_response(410, f"job {job.public_id!r} expired: its result was deleted "
                                   f"{service.config.ttl_s:g} s after it finished")
    if job.status is JobStatus.CANCELLED:
        return error_response(409, f"job {job.public_id!r} was cancelled; it has no result")
    response = error_response(409, f"job {job.public_id!r} is {job.status.value}; its result is not ready yet")
    response.headers["Retry-After"] = "1"
    return response
