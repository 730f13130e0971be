"""``POST /embeddings``: OpenAI's embeddings request, answered by any *embeddings model* on the one inference path.

An embeddings model is one whose signature has a BYTES input ``text`` of shape ``[-1]`` and an FP32 output
``embedding`` of shape ``[-1, D]`` (and, for ``usage``, optionally an INT64 output ``token_count``): the
``embeddings`` runtime serves such models (:mod:`inferd.runtimes.embeddings`), and so can a Python model. The texts
become one V2 request per ``max_batch_size`` of the model, sent through :meth:`DataPlane.infer` (where
dynamic batching may merge them with other callers'), at most :data:`CHUNKS_IN_FLIGHT` at a time, and the rows
come back in order.

Fields: ``input`` (a string or a list of at most :data:`MAX_INPUTS` strings, none empty, each at most
:data:`MAX_INPUT_CHARS` characters; token-id arrays are refused), ``model``, ``encoding_format`` (``float`` or
``base64``: little-endian float32), ``dimensions`` (only the model's own), ``user`` (ignored).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from inferd.calls import ROUTE_VARIANT, Routing
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, RequestOutput
from inferd.server.openai.body import JSONObject, field_int, field_str, json_type, read_object
from inferd.server.openai.errors import (
    OpenAIRoute,
    as_openai_error,
    from_infer_error,
    invalid_request,
    model_not_found,
)
from inferd.server.rest.responses import JSON
from inferd.server.routing_headers import answered_header, routing_from_headers
from inferd.settings import ServerSettings
from inferd.signature import Signature

MAX_INPUTS = 2048
"""Most texts one request may embed (OpenAI's own limit)."""
MAX_INPUT_CHARS = 100_000
"""Most characters per text. The model reads at most its ``max_length`` tokens of each (256 for MiniLM); this only
bounds the tokenizer's work on a text far longer than that."""
CHUNKS_IN_FLIGHT = 4
"""V2 requests of one embeddings request queued or running at a time: a request of many texts then neither fills
the model's queue by itself (and is refused by it) nor makes other callers wait behind all of its batches."""
TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"
TOKEN_COUNT_OUTPUT = "token_count"
FORMATS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    texts: list[bytes]
    encoding_format: str
    dimensions: int | None


@dataclass(frozen=True, slots=True)
class Embedder:
    """What the route needs to know of an embeddings model."""

    dimension: int
    """D, or -1 when the signature leaves it free."""
    chunk: int
    """Texts per V2 request: the model's max_batch_size (all of them for a model without a batch dimension)."""
    counts_tokens: bool


def embeddings_router(dataplane: DataPlane, settings: ServerSettings) -> APIRouter:
    router = APIRouter(route_class=OpenAIRoute)

    @router.post("/embeddings", summary="Create embeddings (OpenAI)")
    async def create_embeddings(request: Request) -> Response:
        routing = routing_from_headers(request.headers.raw) or Routing()
        body = await create(dataplane, await read_object(request, settings.max_body_bytes), routing)
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON,
                        headers=answered_header(routing))

    return router


async def create(dataplane: DataPlane, request: JSONObject, routing: Routing | None = None) -> dict[str, Any]:
    """The answer to an embeddings request body (for the route, and for the lines of an OpenAI batch file). A
    ``model`` naming an endpoint: one variant (picked as ``routing`` asks, recorded there) embeds every text."""
    parsed = parse_request(request)
    routing = routing or Routing()
    try:
        model, version = dataplane.resolve(parsed.model, None, routing)
    except InferError as exc:  # a forced variant the endpoint does not have
        raise from_infer_error(exc, "model") from None
    embedder = await embedder_for(dataplane, model, version)
    if parsed.dimensions is not None and parsed.dimensions != embedder.dimension:
        raise invalid_request(f"'dimensions' must be the model's own, {embedder.dimension}, if given: model "
                              f"{parsed.model!r} cannot shorten its embeddings", "dimensions", "unsupported_value")
    vectors, tokens = await embed(dataplane, parsed.model, parsed.texts, embedder, routing.answered)
    return response_body(parsed.model, vectors, tokens, parsed.encoding_format)


def parse_request(body: JSONObject) -> EmbeddingsRequest:
    model = field_str(body, "model", required=True)
    assert model is not None
    encoding_format = field_str(body, "encoding_format", choices=FORMATS) or "float"
    dimensions = field_int(body, "dimensions", minimum=1)
    return EmbeddingsRequest(model, parse_input(body.get("input")), encoding_format, dimensions)


def parse_input(value: Any) -> list[bytes]:
    """The texts of ``input``, UTF-8 encoded; 400 naming the item and the limit that is wrong."""
    if value is None:
        raise invalid_request("'input' is required: a string or a list of strings", "input",
                              "missing_required_parameter")
    if isinstance(value, str):
        return [_text(value, "'input'")]
    if not isinstance(value, list):
        raise invalid_request(f"'input' must be a string or a list of strings, not {json_type(value)}", "input")
    if not value:
        raise invalid_request("'input' must not be an empty list", "input")
    if len(value) > MAX_INPUTS:
        raise invalid_request(f"'input' holds {len(value)} items, over the limit of {MAX_INPUTS} per request: "
                              "split them across requests", "input")
    texts = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            if isinstance(item, int | list) and not isinstance(item, bool):
                raise invalid_request("'input' as token ids is not supported by this server: send text", "input",
                                      "unsupported_value")
            raise invalid_request(f"'input[{index}]' must be a string, not {json_type(item)}", "input")
        texts.append(_text(item, f"'input[{index}]'"))
    return texts


def _text(value: str, where: str) -> bytes:
    if not value:
        raise invalid_request(f"{where} must not be an empty string", "input")
    if len(value) > MAX_INPUT_CHARS:
        raise invalid_request(f"{where} has {len(value)} characters, over the limit of {MAX_INPUT_CHARS}", "input")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in the JSON
        raise invalid_request(f"{where} is not valid Unicode text: {exc.reason}", "input") from None


async def embedder_for(dataplane: DataPlane, model: str, version: str | None = None) -> Embedder:
    """The model named ``model`` as an embeddings model (loaded first under model control on-demand): 404 when
    unknown, 503 when not ready, 400 when its signature is not an embeddings model's."""
    try:
        signature = (await dataplane.ensure_loaded(model, version)).signature
        max_batch_size = dataplane.model_config(model, version).max_batch_size
    except InferError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise model_not_found(model, exc.message) from None
        raise from_infer_error(exc, "model") from None
    dimension = embedding_dimension(model, signature)
    chunk = max_batch_size if signature.batched and max_batch_size > 0 else MAX_INPUTS
    token_count = signature.output_datatypes.get(TOKEN_COUNT_OUTPUT) == "INT64"
    return Embedder(dimension, chunk, token_count)


def embedding_dimension(model: str, signature: Signature) -> int:
    """D of an embeddings model's signature; 400 naming what is missing when it is not one."""
    text = signature.input(TEXT_INPUT)
    outputs = {spec.name: spec for spec in signature.outputs}
    embedding = outputs.get(EMBEDDING_OUTPUT)
    if (text is None or text.datatype != "BYTES" or tuple(text.shape) != (-1,) or embedding is None
            or embedding.datatype != "FP32" or len(embedding.shape) != 2):
        raise invalid_request(
            f"model {model!r} is not an embeddings model: it needs a BYTES input {TEXT_INPUT!r} of shape [-1] and "
            f"an FP32 output {EMBEDDING_OUTPUT!r} of shape [-1, D]", "model", "model_not_embeddings")
    return int(embedding.shape[1])


async def embed(dataplane: DataPlane, model: str, texts: Sequence[bytes], embedder: Embedder,
                variant: str | None = None) -> tuple[np.ndarray, int]:
    """The embeddings of ``texts`` in order, and the tokens the model read, over one V2 request per chunk
    (``model`` an endpoint: each chunk forced to ``variant``, so that one variant embeds them all)."""
    parameters = None if variant is None else {ROUTE_VARIANT: variant}
    outputs = [RequestOutput(EMBEDDING_OUTPUT)]
    if embedder.counts_tokens:
        outputs.append(RequestOutput(TOKEN_COUNT_OUTPUT))
    requests = []
    for start in range(0, len(texts), embedder.chunk):
        part = np.empty(min(embedder.chunk, len(texts) - start), dtype=object)
        part[:] = texts[start:start + embedder.chunk]
        requests.append(InferenceRequest(model, [RequestInput(TEXT_INPUT, "BYTES", [len(part)], part)],
                                         outputs=list(outputs), parameters=parameters))
    window = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

    async def infer(request: InferenceRequest) -> InferenceResponse:
        async with window:
            return await dataplane.infer(request)

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other chunks still waiting
            tasks = [group.create_task(infer(r)) for r in requests]
    except* InferError as failures:
        raise as_openai_error(failures.exceptions[0]) from None
    vectors, tokens = [], 0
    for task in tasks:
        answer = {o.name: o.data for o in task.result().outputs}
        vectors.append(np.asarray(answer[EMBEDDING_OUTPUT], dtype=np.float32))
        if embedder.counts_tokens:
            tokens += int(np.asarray(answer[TOKEN_COUNT_OUTPUT]).sum())
    return np.concatenate(vectors) if len(vectors) > 1 else vectors[0], tokens


def response_body(model: str, vectors: np.ndarray, tokens: int, encoding_format: str) -> dict[str, Any]:
    rows = vectors.reshape(len(vectors), -1)
    if encoding_format == "base64":
        little = rows.astype("<f4", copy=False)
        data: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        data = list(rows)  # orjson writes each float32 row as a JSON array
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(data)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
