"""The endpoints' REST routes: inference on an endpoint, and the admin API (list, show, set, delete, rollout,
history). Changes are optimistic: ``If-Match`` (or ``"version"`` in the body) names the version the change
was made against, and the loser of two changes made at once gets 409. Reads need ``read``, changes ``admin``
(see :mod:`inferd.security.scopes`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import Routing
from inferd.codecs import v2_binary, v2_json
from inferd.dataplane import DataPlane
from inferd.endpoints.service import Endpoints
from inferd.errors import invalid, unavailable
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.responses import json_response
from inferd.server.rest.v2_infer import infer as run_infer
from inferd.server.routing_headers import answered_header, routing_from_headers


def endpoint_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["Endpoints"])
    limit = BodyLimit(max_body_bytes, "max_body_bytes")

    def service() -> Endpoints:
        if dataplane.endpoints is None:
            raise unavailable("this server has no endpoint store")
        return dataplane.endpoints

    @router.post("/v2/endpoints/{endpoint}/infer", summary="Inference on an endpoint (a variant answers)")
    async def infer(request: Request, endpoint: str) -> Response:
        service().get(endpoint)
        body = await read_body(request, limit)
        routing = routing_from_headers(request.headers.raw) or Routing()
        content, json_length = await run_infer(dataplane, body, request.headers.get(v2_binary.HEADER_LENGTH),
                                               endpoint, None, routing=routing)
        headers = answered_header(routing)
        if json_length is not None:
            headers[v2_binary.HEADER_LENGTH] = str(json_length)
        return Response(content, media_type="application/json" if json_length is None else "application/octet-stream",
                        headers=headers)

    _admin_routes(router, service, limit)
    return router


def _admin_routes(router: APIRouter, service: Callable[[], Endpoints], limit: BodyLimit) -> None:
    async def body_of(request: Request) -> dict[str, Any]:
        payload = v2_json.loads(await read_body(request, limit) or b"{}")
        if not isinstance(payload, dict):
            raise invalid("the body must be a JSON object")
        return payload

    @router.get("/v2/endpoints", summary="List endpoints")
    async def list_endpoints() -> Response:
        endpoints = service()
        return json_response({"endpoints": [endpoints.describe(n) for n in endpoints.names()]})

    @router.get("/v2/endpoints/{endpoint}", summary="Show an endpoint")
    async def show(endpoint: str) -> Response:
        described = service().describe(endpoint)
        return json_response(described, headers={"etag": f'"{described["version"]}"'})

    @router.put("/v2/endpoints/{endpoint}", summary="Create or replace an endpoint")
    async def put(request: Request, endpoint: str) -> Response:
        spec = await body_of(request)
        expected = _expected(request, spec)
        changed = service().put(endpoint, spec, expected)
        return json_response(changed.to_dict(), headers={"etag": f'"{changed.version}"'})

    @router.delete("/v2/endpoints/{endpoint}", summary="Delete an endpoint")
    async def delete(request: Request, endpoint: str) -> Response:
        service().delete(endpoint, _expected(request, {}))
        return Response(status_code=204)

    @router.post("/v2/endpoints/{endpoint}/rollout", summary="Start a staged rollout")
    async def rollout(request: Request, endpoint: str) -> Response:
        started = service().start_rollout(endpoint, await body_of(request))
        return json_response({"endpoint": endpoint, "state": "running", **started}, status=202)

    @router.get("/v2/endpoints/{endpoint}/history", summary="An endpoint's events")
    async def history(endpoint: str) -> Response:
        return json_response({"endpoint": endpoint, "events": [e.to_dict() for e in service().history(endpoint)]})


def _expected(request: Request, spec: dict[str, Any]) -> int | None:
    """The version a change was made against: ``If-Match`` (an ETag, quoted or not), else the body's
    ``version``; None when neither says (the change applies to whatever is there)."""
    given = request.headers.get("if-match")
    value: Any = given.strip().strip('"').removeprefix("W/").strip('"') if given else spec.pop("version", None)
    if value is None or value == "*":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"If-Match / version must be an endpoint version (a number), got {value!r}") from None
