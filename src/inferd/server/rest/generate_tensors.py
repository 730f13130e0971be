"""Triton's generate extension for a tensor model (a decoupled one above all): ``generate_stream`` maps the JSON
object's fields to the model's inputs by name and each response's outputs back to fields, one server-sent event
per response, through :meth:`DataPlane.stream <inferd.dataplane.DataPlane.stream>`.

A field is an input's values: a number, string or boolean is one element (shape ``[1]``), a list its elements
(nested lists give the shape); a batched model's input gets a batch of one in front. ``parameters`` are the
request's parameters. In an answer, an output of one element is that value, any other the list of its elements
(BYTES as text when it is UTF-8). The stream ends after the model's final response; an error is one
``{"error": ...}`` event.

    POST /v2/models/repeat_int32/generate_stream  {"IN": [4, 5], "DELAY": [0, 0], "WAIT": 0}
    data: {"model_name": "repeat_int32", "model_version": "1", "OUT": 4, "IDX": 0}
    data: {"model_name": "repeat_int32", "model_version": "1", "OUT": 5, "IDX": 1}
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request

from inferd.dataplane import DataPlane
from inferd.decoupled import StreamResponse
from inferd.errors import InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput
from inferd.server.rest.errors import failure_parts
from inferd.server.rest.sse import event, unless_disconnected
from inferd.signature import Signature


def tensor_request(raw: bytes, model: str, version: str | None, signature: Signature) -> InferenceRequest:
    """The generate request's JSON object as an inference request on a tensor model; INVALID_ARGUMENT naming
    what does not fit."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object with a field per input of the model")
    parameters = body.pop("parameters", None)
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid("parameters must be an object")
    request_id = body.pop("id", None)
    inputs = []
    for name, value in body.items():
        spec = signature.input(name)
        if spec is None:
            listed = ", ".join(map(repr, signature.input_names()))
            raise invalid(f"unknown field {name!r}: model {model!r} takes the inputs {listed} (and parameters)")
        shape = list(np.shape(value)) if isinstance(value, list) else [1]
        data = value if isinstance(value, list) else [value]
        if signature.batched:
            shape = [1, *shape]
        inputs.append(RequestInput(name, spec.datatype, shape, data))
    return InferenceRequest(model, inputs, version, id=None if request_id is None else str(request_id),
                            parameters=parameters or None)


def response_fields(response: InferenceResponse) -> dict[str, Any]:
    """One response as the generate extension's JSON object."""
    fields: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        fields["id"] = response.id
    for output in response.outputs:
        values = [_text(v) for v in output.data.reshape(-1).tolist()]
        fields[output.name] = values[0] if len(values) == 1 else values
    return fields


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return value


async def open_tensor_stream(dataplane: DataPlane, http: Request, request: InferenceRequest) -> AsyncIterator[bytes]:
    """The server-sent events of one request, once its first response (or the final flag) has come: a request
    refused before (unknown model, bad input, a full queue) raises, for an HTTP status of its own. A client that
    goes away while it waits, or later (Starlette closes the events), stops the model."""
    responses = dataplane.stream(request)
    try:
        first = await unless_disconnected(http, anext(responses))
    except BaseException:
        await responses.aclose()
        raise
    return _events(first, responses)


async def _events(first: StreamResponse, responses: AsyncGenerator[StreamResponse, None]) -> AsyncIterator[bytes]:
    item = first
    try:
        while True:
            if item.response is not None:
                yield event(response_fields(item.response))
            if item.final:
                return
            item = await anext(responses)
    except InferError as exc:
        _, _, body = failure_parts(exc)
        yield b"data: " + body + b"\n\n"
    finally:
        await responses.aclose()
