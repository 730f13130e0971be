"""Open Inference Protocol (V2) over REST: health, metadata, inference, repository, configuration and
statistics. Each handler translates between HTTP and the DataPlane and nothing more."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import Routing
from inferd.codecs import v2_binary, v2_json
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.server.http.coding import compress, response_coding
from inferd.server.rest.body import INLINE_BYTES, BodyLimit, read_body
from inferd.server.rest.openapi import (
    INFER_BODY,
    INFER_RESPONSE,
    REPOSITORY_INDEX_BODY,
    REPOSITORY_LOAD_BODY,
    REPOSITORY_UNLOAD_BODY,
)
from inferd.server.rest.responses import json_response
from inferd.server.rest.shared_memory import owner
from inferd.server.rest.v2_infer import infer as run_infer
from inferd.server.routing_headers import answered_header, routing_from_headers
from inferd.server.triton import config_to_json


def v2_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["V2 inference protocol"])
    limit = BodyLimit(max_body_bytes, "max_body_bytes")
    _health_routes(router, dataplane)
    _model_routes(router, dataplane)
    _infer_routes(router, dataplane, limit)
    _repository_routes(router, dataplane, limit)
    return router


def _health_routes(router: APIRouter, dataplane: DataPlane) -> None:

    @router.get("/v2/health/live", summary="Server live")
    async def live() -> Response:
        return json_response({"live": dataplane.live()}, 200 if dataplane.live() else 503)

    @router.get("/v2/health/ready", summary="Server ready")
    async def ready() -> Response:
        is_ready = dataplane.ready()
        missing = dataplane.unavailable_services()
        body: dict[str, Any] = {"ready": is_ready, "unavailable": missing} if missing else {"ready": is_ready}
        return json_response(body, 200 if is_ready else 503)

    @router.get("/v2", summary="Server metadata")
    async def server_metadata() -> Response:
        meta = dataplane.server_metadata()
        return json_response({"name": meta.name, "version": meta.version, "extensions": meta.extensions})


def _model_routes(router: APIRouter, dataplane: DataPlane) -> None:

    # Registered before model metadata, so that /v2/models/stats is not read as a model named "stats".
    @router.get("/v2/models/stats", summary="Statistics of every model")
    @router.get("/v2/models/{model}/stats", summary="Model statistics")
    @router.get("/v2/models/{model}/versions/{version}/stats", summary="Model version statistics")
    async def statistics(model: str | None = None, version: str | None = None) -> Response:
        stats = dataplane.statistics(model, version)
        return json_response({"model_stats": [s.to_dict(load_time=True) for s in stats]})

    @router.get("/v2/models/{model}", summary="Model metadata")
    @router.get("/v2/models/{model}/versions/{version}", summary="Model version metadata")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        meta = dataplane.model_metadata(model, version)
        body: dict[str, Any] = {"name": meta.name, "versions": meta.versions, "platform": meta.platform,
                                "inputs": meta.inputs, "outputs": meta.outputs}
        if meta.parameters:
            body["parameters"] = meta.parameters  # the artifact's sha256 (MLServer's form; V2 clients ignore it)
        return json_response(body)

    @router.get("/v2/models/{model}/ready", summary="Model ready")
    @router.get("/v2/models/{model}/versions/{version}/ready", summary="Model version ready")
    async def model_ready(model: str, version: str | None = None) -> Response:
        is_ready = dataplane.model_ready(model, version)
        return json_response({"name": model, "ready": is_ready}, 200 if is_ready else 503)

    @router.get("/v2/models/{model}/config", summary="Model configuration (Triton's JSON form)")
    @router.get("/v2/models/{model}/versions/{version}/config", summary="Model version configuration")
    async def model_config(model: str, version: str | None = None) -> Response:
        return json_response(config_to_json(dataplane.model_config(model, version)))



def _infer_routes(router: APIRouter, dataplane: DataPlane, limit: BodyLimit) -> None:
    infer_docs: dict[str, Any] = {
        "requestBody": INFER_BODY,
        "responses": {"200": {"description": "Inference response",
                              "content": {"application/json": {"schema": INFER_RESPONSE}}}},
    }

    @router.post("/v2/models/{model}/infer", summary="Inference", openapi_extra=infer_docs)
    @router.post("/v2/models/{model}/versions/{version}/infer", summary="Inference on a version",
                 openapi_extra=infer_docs)
    async def infer(request: Request, model: str, version: str | None = None) -> Response:
        # Normally answered on the connection (v2_infer.InferRoute) before FastAPI sees it; this route documents
        # it and serves the same function for a name the native route leaves here (percent-encoded) or when the
        # app runs under another server.
        body = await read_body(request, limit)
        header_length = request.headers.get(v2_binary.HEADER_LENGTH)
        routing = routing_from_headers(request.headers.raw) or Routing()
        regions = None if dataplane.shared_memory is None else dataplane.shared_memory.caller(owner(request.scope))
        content, json_length = await run_infer(dataplane, body, header_length, model, version, regions=regions,
                                               routing=routing)
        headers = {} if json_length is None else {v2_binary.HEADER_LENGTH: str(json_length)}
        headers.update(answered_header(routing))
        coding = response_coding(request.headers.get("accept-encoding"))
        if coding is not None:  # as the native route answers (v2_infer.answer_parts)
            content = compress(content, coding) if len(content) <= INLINE_BYTES \
                else await asyncio.to_thread(compress, content, coding)
            headers.update({"content-encoding": coding, "vary": "accept-encoding"})
        media_type = "application/json" if json_length is None else "application/octet-stream"
        return Response(content, media_type=media_type, headers=headers)



def _repository_routes(router: APIRouter, dataplane: DataPlane, limit: BodyLimit) -> None:
    @router.post("/v2/repository/index", summary="Repository index",
                 openapi_extra={"requestBody": REPOSITORY_INDEX_BODY})
    async def repository_index(request: Request) -> Response:
        body = await read_body(request, limit)
        payload = v2_json.loads(body) if body.strip() else {}
        if not isinstance(payload, dict):
            raise InferError(ErrorCode.INVALID_ARGUMENT, "repository index body must be a JSON object")
        ready_only = bool(payload.get("ready", False))
        return json_response([
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
            for e in dataplane.repository_index(ready_only)
        ])

    @router.post("/v2/repository/models/{model}/load", summary="Load or reload a model",
                 openapi_extra={"requestBody": REPOSITORY_LOAD_BODY})
    async def load(request: Request, model: str) -> Response:
        # Triton's parameters: "config" (model configuration JSON), "file:<version>/<name>" (base64 content)
        await dataplane.load(model, await _parameters(request, limit, "load"))
        return json_response({})

    @router.post("/v2/repository/models/{model}/unload", summary="Unload a model",
                 openapi_extra={"requestBody": REPOSITORY_UNLOAD_BODY})
    async def unload(request: Request, model: str) -> Response:
        await dataplane.unload(model, await _parameters(request, limit, "unload"))  # unload_dependents
        return json_response({})


async def _parameters(request: Request, limit: BodyLimit, call: str) -> dict[str, Any] | None:
    """The ``parameters`` object of a repository load or unload body (which may be empty)."""
    body = await read_body(request, limit)
    payload = v2_json.loads(body) if body.strip() else {}
    parameters = payload.get("parameters") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(parameters, dict | None):
        raise InferError(ErrorCode.INVALID_ARGUMENT,
                         f"a repository {call} body must be a JSON object, with an object of parameters")
    return parameters
