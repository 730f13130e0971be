"""Triton's shared memory extension over REST: registering, unregistering and listing system shared memory regions
(``/v2/systemsharedmemory``), and the CUDA routes (``/v2/cudasharedmemory``), which answer as Triton built without
GPU support does. Each handler parses the call and asks the registry (:mod:`inferd.shared_memory`); the tensors
that name regions are resolved on the one inference path, not here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.codecs import v2_json
from inferd.dataplane import DataPlane
from inferd.errors import invalid, not_found
from inferd.security.auth import Principal
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.responses import json_response
from inferd.shared_memory import CUDA_REFUSAL, NO_KEY, SharedMemoryRegistry

_SYSTEM = "/v2/systemsharedmemory"
_CUDA = "/v2/cudasharedmemory"
_REGISTER_BODY: dict[str, Any] = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["key", "byte_size"],
    "properties": {"key": {"type": "string", "description": "the shared memory object's key, such as /input_data"},
                   "offset": {"type": "integer", "minimum": 0, "default": 0},
                   "byte_size": {"type": "integer", "minimum": 1}}}}}}


def owner(scope: Mapping[str, Any]) -> str:
    """Whose regions a request names: its API key's name (put in the ASGI scope by the key check), or the one
    namespace of a server without keys."""
    principal: Principal | None = scope.get("inferd.principal")
    return NO_KEY if principal is None else principal.name


def shared_memory_router(dataplane: DataPlane, limit: BodyLimit) -> APIRouter:
    router = APIRouter(tags=["Shared memory (Triton)"])

    def registry() -> SharedMemoryRegistry:
        if dataplane.shared_memory is None:
            raise invalid("system shared memory is not enabled on this server")
        return dataplane.shared_memory

    @router.get(_SYSTEM + "/status", summary="Status of every system shared memory region")
    @router.get(_SYSTEM + "/region/{name}/status", summary="Status of one system shared memory region")
    async def status(request: Request, name: str = "") -> Response:
        return json_response([{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                              for r in registry().status(owner(request.scope), name)])

    @router.post(_SYSTEM + "/region/{name}/register", summary="Register a system shared memory region",
                 openapi_extra={"requestBody": _REGISTER_BODY})
    async def register(request: Request, name: str) -> Response:
        body = await read_body(request, limit)
        payload = v2_json.loads(body) if body.strip() else {}
        if not isinstance(payload, dict) or not isinstance(payload.get("key"), str):
            raise invalid(f"failed to register shared memory region {name!r}: the body must be a JSON object with "
                          "a 'key' string, a 'byte_size' and optionally an 'offset'")
        if "byte_size" not in payload:
            raise invalid("Shared memory register request has no 'byte_size' field")
        registry().register(owner(request.scope), name, payload["key"], payload.get("offset", 0),
                            payload["byte_size"])
        return json_response({})

    @router.post(_SYSTEM + "/unregister", summary="Unregister every system shared memory region")
    @router.post(_SYSTEM + "/region/{name}/unregister", summary="Unregister a system shared memory region")
    async def unregister(request: Request, name: str = "") -> Response:
        registry().unregister(owner(request.scope), name)
        return json_response({})

    _cuda_routes(router)
    return router


def _cuda_routes(router: APIRouter) -> None:
    """As Triton built without GPU support: no region is ever registered, so the status is empty and unregistering
    has nothing to do (Triton's examples unregister everything first); registering is refused."""

    @router.get(_CUDA + "/status", summary="Status of CUDA shared memory (always empty: no GPU)")
    @router.get(_CUDA + "/region/{name}/status", summary="Status of a CUDA shared memory region (none: no GPU)")
    async def status(name: str = "") -> Response:
        if name:
            raise not_found(f"Unable to find cuda shared memory region: {name!r}; {CUDA_REFUSAL}")
        return json_response([])

    @router.post(_CUDA + "/region/{name}/register", summary="Register a CUDA shared memory region (refused: no GPU)")
    async def register(name: str) -> Response:
        raise invalid(f"failed to register CUDA shared memory region {name!r}: {CUDA_REFUSAL}")

    @router.post(_CUDA + "/unregister", summary="Unregister every CUDA shared memory region (none: no GPU)")
    @router.post(_CUDA + "/region/{name}/unregister", summary="Unregister a CUDA shared memory region (none)")
    async def unregister(name: str = "") -> Response:
        return json_response({})
