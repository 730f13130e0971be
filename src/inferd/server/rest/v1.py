"""KServe V1 and Vertex AI custom-container routes: ``{"instances": [...]}`` in, ``{"predictions": [...]}``
out, translated to the same :meth:`DataPlane.infer` as every other protocol.

KServe V1: ``GET /v1/models``, ``GET /v1/models/{name}`` (readiness) and ``POST /v1/models/{name}:predict``.

Vertex AI: the routes the platform names through ``AIP_PREDICT_ROUTE`` and ``AIP_HEALTH_ROUTE``
(``settings.predict_route`` / ``settings.health_route``), registered only when set. Vertex serves one model:
``settings.default_model``, or the repository's only model.

The body format is described in :mod:`inferd.codecs.v1`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import GeneralCall, Routing
from inferd.codecs import v1, v2_json
from inferd.dataplane import DataPlane
from inferd.errors import not_found
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.openapi import V1_BODY, V1_RESPONSE
from inferd.server.rest.responses import json_response
from inferd.server.routing_headers import answered_header, routing_from_headers
from inferd.settings import ServerSettings

DEFAULT_MODEL_VARIABLE = "INFERD_DEFAULT_MODEL"
PREDICT_DOCS = {"requestBody": V1_BODY, "responses": {"200": V1_RESPONSE}}


def v1_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["KServe V1 protocol"])

    @router.get("/v1/models", summary="List models")
    async def list_models() -> Response:
        return json_response({"models": served_models(dataplane)})

    @router.get("/v1/models/{model}", summary="Model ready")
    async def model_ready(model: str) -> Response:
        is_ready = dataplane.model_ready(model)
        return json_response({"name": model, "ready": is_ready}, 200 if is_ready else 503)

    @router.post("/v1/models/{model}:predict", summary="Predict", openapi_extra=PREDICT_DOCS)
    async def predict(request: Request, model: str) -> Response:
        body = await read_body(request, BodyLimit(max_body_bytes, "max_body_bytes"))
        return await predict_v1(dataplane, model, body, routing_from_headers(request.headers.raw))

    return router


def vertex_router(dataplane: DataPlane, settings: ServerSettings) -> APIRouter:
    """The Vertex AI routes that the settings name; none when they name none."""
    router = APIRouter(tags=["Vertex AI"])

    async def health() -> Response:
        is_ready = dataplane.ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def predict(request: Request) -> Response:
        body = await read_body(request, BodyLimit(settings.max_body_bytes, "max_body_bytes"))
        hint = f"set {DEFAULT_MODEL_VARIABLE} to the model {settings.predict_route} serves"
        return await predict_v1(dataplane, default_model(dataplane, settings.default_model, hint), body)

    if settings.health_route:
        router.add_api_route(settings.health_route, health, methods=["GET"], summary="Vertex AI health")
    if settings.predict_route:
        router.add_api_route(settings.predict_route, predict, methods=["POST"], summary="Vertex AI predict",
                             openapi_extra=PREDICT_DOCS)
    return router


async def predict_v1(dataplane: DataPlane, model: str, body: bytes, routing: Routing | None = None) -> Response:
    """Decode a V1 body for ``model``, infer, and answer with its predictions (``routing``: what the request's
    headers ask of an endpoint; the answer names the variant)."""
    payload = v2_json.loads(body)
    signature = (await dataplane.ensure_loaded(model)).signature  # on demand, the first request loads it
    call = GeneralCall(v1.decode_request(payload, model, signature))
    call.routing = routing
    response = await dataplane.infer(call)
    return json_response(v1.encode_response(response, signature.batched), headers=answered_header(call.routing))


def served_models(dataplane: DataPlane) -> list[str]:
    """Every model of the repository (loaded or not), sorted."""
    return sorted({entry.name for entry in dataplane.repository_index()})


def default_model(dataplane: DataPlane, configured: str | None, hint: str) -> str:
    """The configured default model, else the repository's only model; 400 with ``hint`` when there are
    several to choose from."""
    if configured:
        return configured
    names = served_models(dataplane)
    if len(names) == 1:
        return names[0]
    if not names:
        raise not_found("the model repository holds no model")
    listed = ", ".join(names)
    raise HTTPError(400, f"the repository serves {len(names)} models ({listed}) and no default model is set: {hint}")
