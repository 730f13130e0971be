"""``GET /models`` and ``GET /models/{id}`` in OpenAI's shape: the models this server can answer now, and under
model control on-demand those in the repository that a request would load (without loading them: a listing must
not fill the memory budget).

A model's ``id`` is its name in the repository (the newest ready version answers); ``created`` is when its folder
last changed (Unix seconds), ``owned_by`` is ``inferd``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.server.openai.errors import OpenAIRoute, from_infer_error, model_not_found
from inferd.server.rest.responses import json_response

OWNER = "inferd"


def models_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(route_class=OpenAIRoute)

    @router.get("/models", summary="List models (OpenAI)")
    async def list_models() -> Response:
        names = sorted({entry.name for entry in dataplane.repository_index(ready_only=True)}
                       | {name for name in dataplane.repository.names() if dataplane.loadable(name)})
        return json_response({"object": "list", "data": [model_card(dataplane, name) for name in names]})

    @router.get("/models/{model:path}", summary="Retrieve a model (OpenAI)")
    async def retrieve_model(model: str) -> Response:
        resolve(dataplane, model)
        return json_response(model_card(dataplane, model))

    return router


def resolve(dataplane: DataPlane, model: str) -> None:
    """Check that ``model`` names a served, ready model (or one a request would load, on demand): 404 in OpenAI's
    form when it is unknown, 503 when it is not ready (with why)."""
    if dataplane.loadable(model):
        return
    try:
        dataplane.signature(model)
    except InferError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise model_not_found(model, exc.message) from None
        raise from_infer_error(exc, "model") from None


def model_card(dataplane: DataPlane, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _created(dataplane, name), "owned_by": OWNER}


def _created(dataplane: DataPlane, name: str) -> int:
    try:
        return int(dataplane.repository.find(name).folder.stat().st_mtime)
    except (InferError, OSError):
        return 0
