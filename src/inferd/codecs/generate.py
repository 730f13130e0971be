"""The body of Triton's generate extension, for the ``/generate`` routes and for asynchronous jobs on a generative
model (``infer-async`` with this body instead of a V2 tensor request).

The request is ``{"text_input": "...", "parameters": {"max_tokens": 64, "temperature": 0, "top_p": 1,
"seed": 1, "stop": [...]}}``, or, for a conversation through the model's chat template, ``{"messages":
[{"role": "user", "content": "..."}], "parameters": {...}}`` in place of ``text_input`` (inferd's addition).
The answer is ``{"model_name", "model_version", "text_output"}``, with ``finish_reason`` and the token counts
on the last one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from inferd.errors import invalid
from inferd.generation.request import GenerationRequest, check_messages
from inferd.generation.scheduler import GenerationEvent

_IGNORED = frozenset({"stream", "exclude_input_in_output"})
"""Parameters clients of Triton's LLM backends send that change nothing here (the input is never echoed)."""
_NUMBERS = {"max_tokens": int, "temperature": float, "top_p": float, "seed": int}
_FIELDS = frozenset({"id", "text_input", "messages", "parameters"})


def is_generate_body(body: bytes, header_length: int | None) -> bool:
    """Whether a stored request body is a generate request rather than a V2 tensor request (which always has
    ``inputs``). Cheap for a V2 body: a byte search, no parse."""
    if header_length is not None or b'"inputs"' in body:
        return False
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and ("text_input" in payload or "messages" in payload)


def parse(raw: bytes, model: str, version: str | None) -> GenerationRequest:
    """The generation request of a body; INVALID_ARGUMENT naming the field that is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object with text_input (or messages)")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}: a generate request has text_input (or messages) and "
                      "parameters")
    fields = _parameters(body.get("parameters") or {})
    if "messages" in body:
        if "text_input" in body:
            raise invalid("a generate request has text_input or messages, not both")
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise invalid("messages must be a list of {role, content} objects")
        check_messages(messages)
        return GenerationRequest(model, messages=messages, model_version=version, **fields)
    text = body.get("text_input")
    if not isinstance(text, str) or not text:
        raise invalid("text_input must be a non-empty string")
    return GenerationRequest(model, prompt=text, model_version=version, **fields)


def _parameters(parameters: object) -> dict[str, Any]:
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
    return fields


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


def answer(model: str, version: str | None, text: str, last: GenerationEvent | None) -> dict[str, Any]:
    """One answer (the whole text, or one streamed piece); the last has the finish reason and token counts."""
    body: dict[str, Any] = {"model_name": model, "model_version": version or "", "text_output": text}
    if last is not None and last.finish_reason is not None:
        body.update(finish_reason=last.finish_reason, prompt_tokens=last.prompt_tokens,
                    completion_tokens=last.completion_tokens)
    return body


async def whole(events: AsyncIterator[GenerationEvent], model: str, version: str | None) -> dict[str, Any]:
    """The non-streamed answer: every event's text joined."""
    parts = []
    async for item in events:
        parts.append(item.text)
        if item.finish_reason is not None:
            return answer(model, version, "".join(parts), item)
    raise RuntimeError("the generation ended without a finish reason")
