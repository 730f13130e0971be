"""Assembles the REST application: routes of every protocol over one DataPlane, and one error mapping."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.server.openai import errors as openai_errors
from inferd.server.openai.router import is_openai_path, openai_router
from inferd.server.rest.body import BodyLimit
from inferd.server.rest.endpoint_routes import endpoint_router
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.generate import generate_router
from inferd.server.rest.openapi import document_honestly
from inferd.server.rest.responses import error_response, failure_response
from inferd.server.rest.sagemaker import sagemaker_router
from inferd.server.rest.shared_memory import shared_memory_router
from inferd.server.rest.v1 import v1_router, vertex_router
from inferd.server.rest.v2 import v2_router
from inferd.settings import ServerSettings

if TYPE_CHECKING:
    from inferd.batch.server_jobs import BatchJobs
    from inferd.jobs.service import AsyncService
    from inferd.observability.metrics import Metrics

log = logging.getLogger(__name__)


def build_app(dataplane: DataPlane, settings: ServerSettings, jobs: AsyncService | None = None,
              batch_jobs: BatchJobs | None = None, metrics: Metrics | None = None) -> FastAPI:
    # /docs and /redoc with Swagger UI and ReDoc served from the fastapi-offline package, not a CDN: they work on
    # a closed network.
    app = FastAPIOffline(title="inferd", version=dataplane.server_metadata().version,
                         description="Open Inference Protocol (V2) server, with KServe V1, SageMaker, Vertex AI "
                                     "and OpenAI-compatible (/openai/v1) routes.")
    document_honestly(app)
    app.include_router(v2_router(dataplane, settings.max_body_bytes))
    app.include_router(shared_memory_router(dataplane, BodyLimit(settings.max_body_bytes, "max_body_bytes")))
    app.include_router(endpoint_router(dataplane, settings.max_body_bytes))
    app.include_router(generate_router(dataplane, settings.max_body_bytes))
    if jobs is not None:
        from inferd.server.rest.async_routes import async_router

        app.include_router(async_router(dataplane, jobs))
    app.include_router(v1_router(dataplane, settings.max_body_bytes))
    app.include_router(vertex_router(dataplane, settings))
    app.include_router(sagemaker_router(dataplane, settings))
    app.include_router(_batch_router(dataplane, settings, batch_jobs))
    app.include_router(openai_router(dataplane, settings))  # its routes answer failures in OpenAI's form
    if metrics is not None:
        _metrics_route(app, metrics)
    app.add_exception_handler(InferError, _on_infer_error)
    app.add_exception_handler(HTTPError, _on_http_error)
    app.add_exception_handler(StarletteHTTPException, _on_starlette_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_parameters)
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected)
    return app


def _metrics_route(app: FastAPI, metrics: Metrics) -> None:
    async def scrape() -> Response:
        return Response(await metrics.render(), media_type=metrics.content_type)

    app.add_api_route("/metrics", scrape, methods=["GET"], summary="Prometheus metrics (text exposition format)",
                      tags=["observability"])


async def _on_infer_error(_request: Request, exc: Exception) -> Response:
    return failure_response(exc)


async def _on_http_error(_request: Request, exc: Exception) -> Response:
    return failure_response(exc)


async def _on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if is_openai_path(request.url.path):  # an unknown path or method under the OpenAI base URL
        return openai_errors.error_response(exc)
    return error_response(exc.status_code, str(exc.detail))


async def _on_invalid_parameters(request: Request, exc: Exception) -> Response:
    """A query or path parameter FastAPI could not convert (``?limit=abc``): 400 in the route's protocol's error
    form naming the parameter, instead of FastAPI's own 422 ``{"detail": [...]}``."""
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(_describe(error) for error in exc.errors()) or "invalid request parameters"
    if is_openai_path(request.url.path):
        return openai_errors.error_response(HTTPError(400, message))
    return error_response(400, message)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header"))
    given = error.get("input")
    return f"parameter '{where}': {error.get('msg', 'invalid')}" + (f" (got {given!r})" if given is not None else "")


async def _on_client_gone(request: Request, _exc: Exception) -> Response:
    """The client went away (or stopped sending, past ``body_timeout_s``) before its body was read: nothing to
    answer and nothing broken, so one line at INFO, no traceback. (Its client got the 408 already, if any.)"""
    log.info("the client went away before the body of %s %s was read (ClientDisconnect)", request.method,
             request.url.path)
    return error_response(400, "the client went away before its request body was read")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return failure_response(exc, f"{request.method} {request.url.path}")


def _batch_router(dataplane: DataPlane, settings: ServerSettings, batch_jobs: BatchJobs | None) -> Any:
    from inferd.batch.server_jobs import BatchJobs
    from inferd.server.rest.batch_routes import batch_router

    return batch_router(batch_jobs or BatchJobs(dataplane, settings.batch_roots))
