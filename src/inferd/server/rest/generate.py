"""Triton's generate extension: ``POST /v2/models/{m}[/versions/{v}]/generate`` (one JSON answer) and
``.../generate_stream`` (server-sent events, one ``data:`` object per piece of text).

The request is ``{"text_input": "...", "parameters": {"max_tokens": 64, "temperature": 0, "top_p": 1,
"seed": 1, "stop": [...]}}``; the answer ``{"model_name", "model_version", "text_output"}``, with
``finish_reason`` and the token counts on the last one. Errors are ``{"error": "..."}`` (the V2 form); one that
happens mid-stream is sent as such an event. ``generate_stream`` on a tensor model (a decoupled one: any number of
responses) maps fields to inputs by name instead: see :mod:`inferd.server.rest.generate_tensors`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.dataplane import DataPlane
from inferd.errors import InferError, invalid
from inferd.generation.request import GenerationRequest
from inferd.generation.scheduler import GenerationEvent
from inferd.server.rest.body import BodyLimit, read_body
from inferd.server.rest.errors import failure_parts
from inferd.server.rest.generate_tensors import open_tensor_stream, tensor_request
from inferd.server.rest.responses import json_response
from inferd.server.rest.sse import event, sse_response, unless_disconnected

_IGNORED = frozenset({"stream", "exclude_input_in_output"})
"""Parameters clients of Triton's LLM backends send that change nothing here (the input is never echoed)."""
_NUMBERS = {"max_tokens": int, "temperature": float, "top_p": float, "seed": int}


def generate_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["V2 generate extension"])
    limit = BodyLimit(max_body_bytes, "max_body_bytes")

    @router.post("/v2/models/{model}/generate", summary="Generate text (Triton generate extension)")
    @router.post("/v2/models/{model}/versions/{version}/generate", summary="Generate text, one version")
    async def generate(request: Request, model: str, version: str | None = None) -> Response:
        events = await dataplane.generate(parse(await read_body(request, limit), model, version))
        return json_response(await unless_disconnected(request, _whole(events, model, version)))

    @router.post("/v2/models/{model}/generate_stream", summary="Generate text, or stream a model's responses, "
                 "as server-sent events")
    @router.post("/v2/models/{model}/versions/{version}/generate_stream", summary="Stream, one version")
    async def generate_stream(request: Request, model: str, version: str | None = None) -> Response:
        raw = await read_body(request, limit)
        chosen = await dataplane.ensure_loaded(model, version)
        if (chosen.loaded or chosen.require_loaded()).generator is None:  # a tensor model: its inputs by name
            inference = tensor_request(raw, model, version, chosen.signature)
            return sse_response(await open_tensor_stream(dataplane, request, inference))
        events = await dataplane.generate(parse(raw, model, version))
        return sse_response(_stream(events, model, version))

    return router


def parse(raw: bytes, model: str, version: str | None) -> GenerationRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object with text_input")
    unknown = sorted(set(body) - {"id", "text_input", "parameters"})
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}: a generate request has text_input and parameters")
    text = body.get("text_input")
    if not isinstance(text, str) or not text:
        raise invalid("text_input must be a non-empty string")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise invalid("parameters must be an object")
    fields: dict[str, Any] = {}
    for name, value in parameters.items():
        if name in _IGNORED:
            continue
        if name == "stop":
            fields["stop"] = _stop(value)
        elif name in _NUMBERS:
            fields[name] = _number(name, value, _NUMBERS[name])
        else:
            raise invalid(f"parameter {name!r} is not supported; supported: stop, {', '.join(_NUMBERS)}")
    return GenerationRequest(model, prompt=text, model_version=version, **fields)


def _number(name: str, value: object, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise invalid(f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)  # type: ignore[no-any-return]


def _stop(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise invalid("parameter 'stop' must be a string or a list of strings")


def _answer(model: str, version: str | None, text: str, last: GenerationEvent | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"model_name": model, "model_version": version or "", "text_output": text}
    if last is not None and last.finish_reason is not None:
        answer.update(finish_reason=last.finish_reason, prompt_tokens=last.prompt_tokens,
                      completion_tokens=last.completion_tokens)
    return answer


async def _whole(events: AsyncIterator[GenerationEvent], model: str, version: str | None) -> dict[str, Any]:
    parts = []
    async for item in events:
        parts.append(item.text)
        if item.finish_reason is not None:
            return _answer(model, version, "".join(parts), item)
    raise RuntimeError("the generation ended without a finish reason")


async def _stream(events: AsyncGenerator[GenerationEvent, None], model: str,
                  version: str | None) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            if item.text or item.finish_reason is not None:
                yield event(_answer(model, version, item.text, item))
    except InferError as exc:
        _, _, body = failure_parts(exc)
        yield b"data: " + body + b"\n\n"
    finally:
        await events.aclose()
