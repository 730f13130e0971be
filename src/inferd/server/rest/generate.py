"""Triton's generate extension: ``POST /v2/models/{m}[/versions/{v}]/generate`` (one JSON answer) and
``.../generate_stream`` (server-sent events, one ``data:`` object per piece of text).

The body (``text_input`` or ``messages``, and ``parameters``) and the answer are read and written by
:mod:`inferd.codecs.generate`. Errors are ``{"error": "..."}`` (the V2 form); one that
happens mid-stream is sent as such an event. ``generate_stream`` on a tensor model (a decoupled one: any number of
responses) maps fields to inputs by name instead: see :mod:`inferd.server.rest.generate_tensors`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import Routing
from inferd.codecs.generate import answer, parse, whole
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.generation.scheduler import GenerationEvent
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.errors import failure_parts
from inferd.server.rest.generate_tensors import open_tensor_stream, tensor_request
from inferd.server.rest.responses import json_response
from inferd.server.rest.sse import event, sse_response, unless_disconnected
from inferd.server.routing_headers import answered_header, routing_from_headers


def generate_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["V2 generate extension"])
    limit = BodyLimit(max_body_bytes, "max_body_bytes")

    @router.post("/v2/models/{model}/generate", summary="Generate text (Triton generate extension)")
    @router.post("/v2/models/{model}/versions/{version}/generate", summary="Generate text, one version")
    async def generate(request: Request, model: str, version: str | None = None) -> Response:
        routing = routing_from_headers(request.headers.raw) or Routing()
        parsed = replace(parse(await read_body(request, limit), model, version), routing=routing)
        events = await dataplane.generate(parsed)
        return json_response(await unless_disconnected(request, whole(events, model, version)),
                             headers=answered_header(routing))

    @router.post("/v2/models/{model}/generate_stream", summary="Generate text, or stream a model's responses, "
                 "as server-sent events")
    @router.post("/v2/models/{model}/versions/{version}/generate_stream", summary="Stream, one version")
    async def generate_stream(request: Request, model: str, version: str | None = None) -> Response:
        raw = await read_body(request, limit)
        chosen = await dataplane.ensure_loaded(model, version)
        if (chosen.loaded or chosen.require_loaded()).generator is None:  # a tensor model: its inputs by name
            inference = tensor_request(raw, model, version, chosen.signature)
            return sse_response(await open_tensor_stream(dataplane, request, inference))
        routing = routing_from_headers(request.headers.raw) or Routing()
        events = await dataplane.generate(replace(parse(raw, model, version), routing=routing))
        return sse_response(_stream(events, model, version), answered_header(routing))

    return router


async def _stream(events: AsyncGenerator[GenerationEvent, None], model: str,
                  version: str | None) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            if item.text or item.finish_reason is not None:
                yield event(answer(model, version, item.text, item))
    except InferError as exc:
        _, _, body = failure_parts(exc)
        yield b"data: " + body + b"\n\n"
    finally:
        await events.aclose()
