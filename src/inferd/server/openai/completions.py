"""``POST /chat/completions`` and ``POST /completions`` in OpenAI's shapes, streamed (server-sent events) or
not. Each route reads and checks OpenAI's fields, hands a :class:`~inferd.generation.request.GenerationRequest`
to :meth:`~inferd.dataplane.DataPlane.generate`, and writes the events back in OpenAI's form."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import Routing
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.generation.request import MAX_STOP_CHARS, MAX_STOP_SEQUENCES, ROLES, GenerationRequest
from inferd.generation.scheduler import GenerationEvent
from inferd.server.openai.body import (
    JSONObject,
    field_bool,
    field_float,
    field_int,
    field_str,
    json_type,
    read_object,
)
from inferd.server.openai.errors import (
    OpenAIRoute,
    as_openai_error,
    from_infer_error,
    invalid_request,
    model_not_found,
    unsupported,
)
from inferd.server.rest.responses import json_response
from inferd.server.rest.sse import DONE, event, sse_response, unless_disconnected
from inferd.server.routing_headers import answered_header, routing_from_headers

_SAMPLING = ("model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options", "n",
             "user", "store", "metadata", "service_tier", "presence_penalty", "frequency_penalty", "logprobs",
             "top_logprobs", "logit_bias")
CHAT_FIELDS = frozenset((*_SAMPLING, "messages", "max_completion_tokens", "tools", "tool_choice", "functions",
                         "function_call", "parallel_tool_calls", "response_format", "audio", "modalities",
                         "prediction", "reasoning_effort", "web_search_options"))
COMPLETION_FIELDS = frozenset((*_SAMPLING, "prompt", "echo", "suffix", "best_of"))
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "logprobs": (False,), "echo": (False,), "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0), "logit_bias": ({},), "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},), "modalities": (["text"],), "tools": ([],), "suffix": ("",),
}
"""Fields that are accepted with these values (what the stock client or a default means), refused otherwise."""
_IGNORED = frozenset({"user", "store", "metadata", "service_tier", "model", "stream", "stream_options"})


def completions_router(dataplane: DataPlane, max_body_bytes: int) -> APIRouter:
    router = APIRouter(route_class=OpenAIRoute)

    @router.post("/chat/completions", summary="Chat completion (OpenAI)")
    async def chat(request: Request) -> Response:
        body = await read_object(request, max_body_bytes)
        return await _complete(dataplane, request, body, chat=True)

    @router.post("/completions", summary="Text completion (OpenAI)")
    async def completion(request: Request) -> Response:
        body = await read_object(request, max_body_bytes)
        return await _complete(dataplane, request, body, chat=False)

    return router


async def _complete(dataplane: DataPlane, request: Request, body: JSONObject, chat: bool) -> Response:
    generation = chat_request(body) if chat else completion_request(body)
    stream = bool(field_bool(body, "stream"))
    usage_chunk = _stream_options(body, stream)
    routing = routing_from_headers(request.headers.raw) or Routing()
    events = await _start(dataplane, replace(generation, routing=routing), _limit_name(body))
    shape = _Shape(chat, generation.model_name)
    if stream:
        return sse_response(_stream(events, shape, usage_chunk), answered_header(routing))
    return json_response(await unless_disconnected(request, _whole(events, shape)), headers=answered_header(routing))


async def complete(dataplane: DataPlane, body: JSONObject, chat: bool) -> dict[str, Any]:
    """The whole answer to a (chat) completion request body that does not stream, as the route answers it (the
    lines of an OpenAI batch file)."""
    if field_bool(body, "stream"):
        raise invalid_request("'stream' must be false or absent here: a batch request is answered whole", "stream")
    generation = chat_request(body) if chat else completion_request(body)
    _stream_options(body, False)
    events = await _start(dataplane, generation, _limit_name(body))
    return await _whole(events, _Shape(chat, generation.model_name))


async def _start(dataplane: DataPlane, generation: GenerationRequest,
                 limit_name: str) -> AsyncGenerator[GenerationEvent, None]:
    try:
        return await dataplane.generate(generation)
    except InferError as exc:
        raise _openai(exc, generation.model_name, limit_name) from None


def _openai(error: InferError, model: str, limit_name: str) -> Exception:
    """``limit_name``: the field that set the output limit (``max_tokens`` or ``max_completion_tokens``), named as
    the ``param`` of a prompt and limit that do not fit in the context."""
    if error.code is ErrorCode.NOT_FOUND and not error.message.startswith(f"endpoint {model!r} has no variant"):
        return model_not_found(model, error.message)
    param = "model" if "not a generative model" in error.message else None
    if "max_tokens is" in error.message:
        param = limit_name
    return from_infer_error(error, param)


def _limit_name(body: JSONObject) -> str:
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


# -- reading the request ----------------------------------------------------------------------------
def chat_request(body: JSONObject) -> GenerationRequest:
    _check_fields(body, CHAT_FIELDS, chat=True)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise invalid_request("'messages' is required: a list of {role, content} objects", "messages")
    if not messages:
        raise invalid_request("'messages' is empty: it needs at least one message", "messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"messages[{i}] must be an object, not {json_type(message)}", f"messages[{i}]")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise invalid_request(f"messages[{i}].role must be one of {', '.join(map(repr, ROLES))}, got {role!r}",
                                  f"messages[{i}].role")
        if not isinstance(content, str):
            raise invalid_request(f"messages[{i}].content must be a string, not {json_type(content)}",
                                  f"messages[{i}].content")
        checked.append({"role": role, "content": content})
    limit = field_int(body, "max_completion_tokens", minimum=1)
    legacy = field_int(body, "max_tokens", minimum=1)
    if limit is not None and legacy is not None and limit != legacy:
        raise invalid_request(f"'max_tokens' ({legacy}) and 'max_completion_tokens' ({limit}) disagree: send one "
                              "('max_tokens' is its older name)", "max_tokens")
    name = "max_completion_tokens" if limit is not None else "max_tokens"
    return _request(body, messages=checked, limit=limit, limit_name=name)


def completion_request(body: JSONObject) -> GenerationRequest:
    _check_fields(body, COMPLETION_FIELDS, chat=False)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise unsupported("prompt", "send one prompt as a string (a list of prompts or of token ids is not "
                                    "supported)")
    if not isinstance(prompt, str):
        raise invalid_request(f"'prompt' is required: a string, not {json_type(prompt)}", "prompt")
    if not prompt:
        raise invalid_request("'prompt' is empty", "prompt")
    return _request(body, prompt=prompt, limit=None, limit_name="max_tokens")


def _request(body: JSONObject, *, limit: int | None, limit_name: str, prompt: str | None = None,
             messages: list[dict[str, str]] | None = None) -> GenerationRequest:
    model = field_str(body, "model", required=True)
    assert model is not None
    if limit is None:
        limit = field_int(body, "max_tokens", minimum=1)
    return GenerationRequest(
        model, prompt=prompt, messages=messages, max_tokens=limit,
        temperature=field_float(body, "temperature", minimum=0, maximum=2),
        top_p=_top_p(body), seed=field_int(body, "seed"), stop=_stops(body))


def _check_fields(body: JSONObject, known: frozenset[str], chat: bool) -> None:
    for name, value in body.items():
        if name not in known:
            raise invalid_request(f"Unrecognized request argument supplied: {name!r}", name,
                                  "unknown_parameter")
        if value is None or name in _IGNORED or name in ("messages", "prompt", "max_tokens", "temperature",
                                                           "top_p", "seed", "stop", "max_completion_tokens"):
            continue
        if name in _NEUTRAL and value in _NEUTRAL[name]:
            continue
        detail = {"n": "only n = 1 is served", "logprobs": "log probabilities are not returned",
                  "tools": "tool calls are not served", "best_of": "only best_of = 1 is served"}.get(name, "")
        raise unsupported(name, detail)


def _top_p(body: JSONObject) -> float | None:
    value = field_float(body, "top_p", minimum=0, maximum=1)
    if value is not None and value <= 0:
        raise invalid_request(f"'top_p' must be above 0, got {value}", "top_p")
    return value


def _stops(body: JSONObject) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_request("'stop' must be a string or a list of strings", "stop")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise invalid_request(f"'stop' has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed", "stop")
    if any(not s for s in stop):
        raise invalid_request("'stop' sequences must not be empty", "stop")
    longest = max(stop, key=len, default="")
    if len(longest) > MAX_STOP_CHARS:
        raise invalid_request(f"'stop' sequences may have at most {MAX_STOP_CHARS} characters; one has "
                              f"{len(longest)}", "stop")
    return tuple(stop)


def _stream_options(body: JSONObject, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise invalid_request("'stream_options' is only allowed with stream = true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise invalid_request("'stream_options' must be an object with 'include_usage'", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid_request("'stream_options.include_usage' must be a boolean", "stream_options.include_usage")
    return include


# -- writing the answer -----------------------------------------------------------------------------
class _Shape:
    """OpenAI's response objects for one request: ids, names, and how a piece of text is wrapped."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def whole(self, text: str, finish: str | None, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                      "logprobs": None, "finish_reason": finish}
            return {**self.head("chat.completion"), "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self.head("text_completion"), "choices": [choice], "usage": usage}

    def chunk(self, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self.head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self.head("text_completion"), "choices": [choice]}


def _usage(last: GenerationEvent) -> dict[str, int]:
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens}


async def _whole(events: AsyncIterator[GenerationEvent], shape: _Shape) -> dict[str, Any]:
    parts = []
    async for item in events:
        parts.append(item.text)
        if item.finish_reason is not None:
            return shape.whole("".join(parts), item.finish_reason, _usage(item))
    raise RuntimeError("the generation ended without a finish reason")


async def _stream(events: AsyncGenerator[GenerationEvent, None], shape: _Shape,
                  usage_chunk: bool) -> AsyncIterator[bytes]:
    with_usage: Callable[[dict[str, Any]], dict[str, Any]] = (
        (lambda chunk: {**chunk, "usage": None}) if usage_chunk else (lambda chunk: chunk))
    try:
        if shape.chat:
            yield event(with_usage(shape.chunk("", None, first=True)))
        async for item in events:
            if item.text:
                yield event(with_usage(shape.chunk(item.text, None)))
            if item.finish_reason is not None:
                yield event(with_usage(shape.chunk(None, item.finish_reason)))
                if usage_chunk:
                    yield event({**shape.head(shape.chunk("", None)["object"]), "choices": [],
                                 "usage": _usage(item)})
        yield DONE
    except Exception as exc:  # the model failed mid-stream: the client sees an error event, not a silent end
        yield event(as_openai_error(exc, "a streamed completion").body())
    finally:
        await events.aclose()
