"""The OpenAI Batch API's files: each input line a request, each output line its answer, run through the same
functions as the ``/openai/v1`` routes (so through the one inference path), by ``inferd batch run``.

An input line is ``{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``, with
``url`` one of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` (or the same under
``/openai/v1``). A line may also be a bare request body, ``{"messages": [...]}`` (a chat completion) or
``{"prompt": "..."}`` (a completion); its ``custom_id`` is then ``line-<n>`` (n from 1). A body without ``model``
gets the job's model; a body naming another model of the repository loads it when first asked for.

An output line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``: the
body is what the route answers, an OpenAI error object for a request the model refused or failed (status 4xx or
5xx). A line that is not a request at all (not JSON, no ``custom_id``, an unknown ``url``) has ``"response":
null`` and ``"error": {"code", "message"}``. A request refused for the moment (the model's queue full, 429/503) is
tried again a few times before its failure is written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from inferd.batch.job import BatchSummary
from inferd.batch.lines import Handler, run_lines
from inferd.batch.options import BatchError
from inferd.batch.progress import Progress
from inferd.dataplane import DataPlane
from inferd.on_demand import DemandPolicy, ModelControl
from inferd.repository import ModelRepository, why_unavailable
from inferd.server.openai.body import JSONObject
from inferd.server.openai.completions import complete
from inferd.server.openai.embeddings import create
from inferd.server.openai.errors import as_openai_error

Route = Callable[[DataPlane, JSONObject], Awaitable[dict[str, Any]]]


async def _chat(dataplane: DataPlane, body: JSONObject) -> dict[str, Any]:
    return await complete(dataplane, body, chat=True)


async def _completion(dataplane: DataPlane, body: JSONObject) -> dict[str, Any]:
    return await complete(dataplane, body, chat=False)


ROUTES: dict[str, Route] = {"/v1/chat/completions": _chat, "/v1/completions": _completion, "/v1/embeddings": create}
RETRIES = 3
"""Attempts after the first for a request refused for the moment (429, 503)."""
BACKOFF_S = 0.5


class LineError(Exception):
    """A line that is not a request of the batch format (``custom_id``: its own, when it has a good one)."""

    def __init__(self, message: str, custom_id: str | None = None) -> None:
        super().__init__(message)
        self.custom_id = custom_id


def is_openai_lines(first_line: bytes) -> bool:
    """Whether a JSON Lines file whose first line is this holds OpenAI batch requests (or bare chat or completion
    bodies) rather than records of tensor inputs."""
    try:
        payload = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and bool({"custom_id", "messages", "prompt"} & set(payload))


def parse_line(number: int, raw: bytes, model: str) -> tuple[str, Route, JSONObject]:
    """The line's custom id, route and body (``model`` filled in); :class:`LineError` when it is not a request."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"line {number + 1} is not valid JSON: {exc}") from None
    if not isinstance(line, dict):
        raise LineError(f"line {number + 1} must be a JSON object")
    if "custom_id" not in line and "url" not in line:  # a bare request body
        line = {"custom_id": f"line-{number + 1}", "method": "POST", "body": line,
                "url": "/v1/chat/completions" if "messages" in line else "/v1/completions"}
    custom_id, method, url, body = (line.get(k) for k in ("custom_id", "method", "url", "body"))
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(f"line {number + 1}: 'custom_id' must be a non-empty string")
    if method not in (None, "POST"):
        raise LineError(f"line {number + 1}: 'method' must be POST, got {method!r}", custom_id)
    path = url.removeprefix("/openai") if isinstance(url, str) else url
    route = ROUTES.get(path) if isinstance(path, str) else None
    if route is None:
        raise LineError(f"line {number + 1}: 'url' must be one of {', '.join(ROUTES)}, got {url!r}", custom_id)
    if not isinstance(body, dict):
        raise LineError(f"line {number + 1}: 'body' must be a JSON object (the request)", custom_id)
    return custom_id, route, {"model": model, **body}


def line_handler(dataplane: DataPlane, model: str) -> Handler:
    """The answer to one request line of a batch file (see the module docstring)."""

    async def handle(number: int, raw: bytes) -> tuple[bytes, bool]:
        answer: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": None, "response": None,
                                  "error": None}
        try:
            answer["custom_id"], route, body = parse_line(number, raw, model)
        except LineError as exc:
            answer["custom_id"] = exc.custom_id
            answer["error"] = {"code": "invalid_request", "message": str(exc)}
            return orjson.dumps(answer), True
        status, result = await _run(route, dataplane, body)
        answer["response"] = {"status_code": status, "request_id": uuid.uuid4().hex, "body": result}
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), status != 200

    return handle


async def _run(route: Route, dataplane: DataPlane, body: JSONObject) -> tuple[int, dict[str, Any]]:
    for attempt in range(RETRIES + 1):
        try:
            return 200, await route(dataplane, body)
        except Exception as exc:
            failure = as_openai_error(exc, "a batch request")
            if failure.status not in (429, 503) or attempt == RETRIES:
                return failure.status, failure.body()
            await asyncio.sleep(failure.retry_after_s or BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def run_openai_batch(repository: Path, model: str, input: Path, output: Path, *, concurrency: int = 0,
                     restart: bool = False, on_progress: Callable[[Progress], None] | None = None) -> BatchSummary:
    """Answer every request line of ``input`` (an OpenAI batch input file) with ``model`` from the model
    ``repository`` folder into ``output/<stem>_output.jsonl``; resumable. ``concurrency`` 0: the model's slots
    (all its sequences busy) for a generative model, 8 otherwise."""
    try:
        repo = ModelRepository(repository)
    except FileNotFoundError as exc:
        raise BatchError(str(exc)) from None
    if model not in repo.names():
        raise BatchError(f"no model {model!r} in {repository}; models there: {', '.join(repo.names()) or 'none'}")
    loaded = repo.load(model)
    version = loaded.latest_ready()
    if version is None:
        raise BatchError(f"model {model!r} failed to load: {why_unavailable(loaded)}")
    if not concurrency:
        generator = version.require_loaded().generator
        concurrency = generator.engine.slots if generator is not None else 8
    dataplane = DataPlane(repo, control=ModelControl(on_demand=DemandPolicy()))  # other models: on demand
    try:
        return asyncio.run(run_lines(input, output, line_handler(dataplane, model), model=model,
                                     concurrency=concurrency, restart=restart, on_progress=on_progress))
    finally:
        dataplane.close()
