"""The SageMaker container contract: ``GET /ping`` and ``POST /invocations``, over the same DataPlane.

The model: the ``X-Amzn-SageMaker-Target-Model`` header (multi-model endpoints send a relative path such as
``digits.tar.gz`` or ``digits/model.tar.gz``: its first component without ``.tar.gz``/``.tgz``/``.tar``),
else ``settings.default_model``, else the repository's only model.

Request ``Content-Type`` (parameters such as ``charset`` accepted; none means JSON):

* ``application/json``: a V2 request (answered with a V2 body), a V1 body ``{"instances": ...}`` or
  ``{"inputs": ...}``, a bare list of instances, or an object of input name to values (all answered V1
  style, ``{"predictions": [...]}``); see :mod:`inferd.codecs.v1`,
* ``text/csv``: rows of one input, no header (:mod:`inferd.codecs.csv_rows`),
* ``application/jsonlines`` / ``application/x-jsonlines``: one instance per line.

Response format from ``Accept``: ``application/json`` (also ``*/*`` or none), ``text/csv`` (one line per row)
or JSON lines (one prediction per line). Others get 415 / 406 naming what is supported.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import GeneralCall
from inferd.codecs import csv_rows, v1, v2_json
from inferd.dataplane import DataPlane
from inferd.errors import invalid
from inferd.inference import InferenceRequest, InferenceResponse
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.errors import HTTPError
from inferd.server.rest.openapi import INVOCATIONS_BODY
from inferd.server.rest.responses import JSON, error_response, json_response
from inferd.server.rest.v1 import DEFAULT_MODEL_VARIABLE, default_model
from inferd.server.routing_headers import ANSWERED, SAGEMAKER_ANSWERED, routing_from_headers
from inferd.settings import ServerSettings
from inferd.signature import Signature

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"
CSV = "text/csv"
JSON_LINES = ("application/jsonlines", "application/x-jsonlines")
CONTENT_TYPES = (JSON, CSV, *JSON_LINES)
"""Request bodies ``/invocations`` reads, and the response formats it writes."""
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def sagemaker_router(dataplane: DataPlane, settings: ServerSettings) -> APIRouter:
    router = APIRouter(tags=["SageMaker"])

    @router.get("/ping", summary="SageMaker health check")
    async def ping() -> Response:
        if dataplane.ready():
            return Response(status_code=200)
        return error_response(503, "not ready: the models are still loading, or one failed to load")

    @router.post("/invocations", summary="SageMaker inference", openapi_extra={"requestBody": INVOCATIONS_BODY})
    async def invocations(request: Request) -> Response:
        content_type, charset = parse_content_type(request.headers.get("content-type"))
        accept = negotiate(request.headers.get("accept"))
        body = await read_body(request, BodyLimit(settings.max_body_bytes, "max_body_bytes"))
        model = target_model(dataplane, settings.default_model, request.headers.get(TARGET_MODEL_HEADER))
        signature = (await dataplane.ensure_loaded(model)).signature  # on demand, the first request loads it
        inference, is_v2 = decode_invocation(body, content_type, charset, model, signature)
        call = GeneralCall(inference)
        call.routing = routing_from_headers(request.headers.raw)
        response = await dataplane.infer(call)
        answer = encode_invocation(response, accept, is_v2, signature.batched)
        if call.routing is not None and call.routing.answered is not None:
            answer.headers.update({ANSWERED: call.routing.answered, SAGEMAKER_ANSWERED: call.routing.answered})
        return answer

    return router


def target_model(dataplane: DataPlane, configured: str | None, header: str | None) -> str:
    if header is not None:
        return model_from_target(header)
    hint = f"name the model with the {TARGET_MODEL_HEADER} header or set {DEFAULT_MODEL_VARIABLE}"
    return default_model(dataplane, configured, hint)


def model_from_target(target: str) -> str:
    """The model a multi-model endpoint's target names: ``digits/model.tar.gz`` and ``digits.tar.gz`` are
    both ``digits``."""
    name = target.strip().lstrip("/").split("/", 1)[0]
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        raise HTTPError(400, f"{TARGET_MODEL_HEADER} {target!r} names no model")
    return name


def parse_content_type(header: str | None) -> tuple[str, str]:
    """The request's media type and charset; 415 for a type ``/invocations`` does not read."""
    kind, parameters = _media_type(header or JSON)
    if kind not in CONTENT_TYPES:
        raise HTTPError(415, f"unsupported Content-Type {kind!r}; /invocations takes {_listed(CONTENT_TYPES)}")
    return kind, parameters.get("charset", "utf-8")


def negotiate(accept: str | None) -> str:
    """The response format for an ``Accept`` header, by preference (``q``); 406 when none is supported."""
    if not accept or not accept.strip():
        return JSON
    ranges = []
    for position, item in enumerate(accept.split(",")):
        if item.strip():
            kind, parameters = _media_type(item)
            quality = _quality(parameters.get("q"))
            if quality > 0:
                ranges.append((-quality, position, kind))
    wildcards = {"*/*": JSON, "application/*": JSON, "text/*": CSV}
    for _, _, kind in sorted(ranges):
        if kind in CONTENT_TYPES:
            return kind
        if kind in wildcards:
            return wildcards[kind]
    raise HTTPError(406, f"cannot answer with {accept!r}; /invocations answers {_listed(CONTENT_TYPES)}")


def decode_invocation(body: bytes, content_type: str, charset: str, model: str,
                      signature: Signature) -> tuple[InferenceRequest, bool]:
    """The request a body stands for, and whether it was a V2 request (to answer in kind)."""
    if not body.strip():
        raise invalid("the request body is empty")
    if content_type == CSV:
        return csv_rows.decode_request(csv_rows.decode_text(body, charset), model, signature), False
    if content_type in JSON_LINES:
        instances = v1.loads_lines(csv_rows.decode_text(body, charset))
        return v1.decode_instances(instances, model, signature), False
    payload = v2_json.loads(body if _is_utf8(charset) else csv_rows.decode_text(body, charset))
    if v1.looks_like_v2(payload):
        return v2_json.decode_request(payload, model), True
    return v1.decode_json(payload, model, signature), False


def encode_invocation(response: InferenceResponse, accept: str, is_v2: bool, batched: bool) -> Response:
    if accept == CSV:
        return Response(csv_rows.encode_response(response, batched), media_type=CSV)
    if accept in JSON_LINES:
        return Response(v1.dumps_lines(v1.encode_predictions(response, batched)), media_type=accept)
    body = v2_json.encode_response(response) if is_v2 else v1.encode_response(response, batched)
    return json_response(body)


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    kind, *rest = header.split(";")
    parameters = {}
    for parameter in rest:
        key, _, value = parameter.partition("=")
        parameters[key.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parameters


def _quality(value: str | None) -> float:
    if value is None:
        return 1.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def _is_utf8(charset: str) -> bool:
    return charset.lower().replace("-", "").replace("_", "") == "utf8"


def _listed(kinds: tuple[str, ...]) -> str:
    return ", ".join(kinds[:-1]) + " or " + kinds[-1]
