"""Streamed inference: the DataPlane's one streaming entry (:meth:`DataPlane.stream
<inferd.dataplane.DataPlane.stream>`), for gRPC ``ModelStreamInfer`` and HTTP ``generate_stream`` alike.

A request on a stream gets :class:`StreamResponse` objects, each with Triton's final flag:

* a **decoupled** model (``[model_transaction_policy] decoupled = true``) answers with zero, one or many
  responses, none of them final, then the final flag alone (``response`` None) once the model has finished:
  Triton's ``TRITONSERVER_RESPONSE_COMPLETE_FINAL`` sent without a response. Its request goes through the
  model's scheduler like any other (bounded queue, priorities, timeouts, statistics), carrying a
  :class:`ThreadSender` down to the model's thread, which hands each response to the stream's event loop;
* a **generative** model streams its text: ``text_input`` in, one ``text_output`` response per piece of text,
  the last one final (as Triton's vLLM backend), through :meth:`DataPlane.generate`;
* any other model answers with its one response, final.

Closing the stream early (a client that cancelled) stops the model: a decoupled model's generator is closed at
its next response, a generation frees its slot. A unary call (V2 infer, KServe V1, jobs) of a decoupled model is
refused with Triton's words (UNIMPLEMENTED, Triton's UNSUPPORTED).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from inferd.calls import Call, GeneralCall, GeneralPrepared, Routing, build_response, prepare_request, routing_from
from inferd.errors import ErrorCode, InferError, invalid
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from inferd.runtimes.base import Outputs, ResponseSender
from inferd.scheduling.scheduler import RunResult
from inferd.signature import check_outputs
from inferd.tensors import to_array

if TYPE_CHECKING:
    from inferd.dataplane import DataPlane
    from inferd.generation.scheduler import GenerationEvent
    from inferd.loading import Loaded
    from inferd.repository import ModelVersion
    from inferd.signature import Signature

DECOUPLED_UNARY = "doesn't support models with decoupled transaction policy"
"""Triton's words for a unary call of a decoupled model, after the endpoint's name ("ModelInfer RPC ...")."""

GENERATION_PARAMETERS = {"max_tokens": int, "temperature": float, "top_p": float, "seed": int}
_IGNORED_INPUTS = frozenset({"stream", "exclude_input_in_output"})
"""Inputs Triton's vLLM clients send that change nothing here (responses always stream; the prompt is never
echoed)."""


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """One message of a stream: a response, or (``response`` None) the final flag alone."""

    response: InferenceResponse | None
    final: bool
    """Triton's ``triton_final_response``: nothing more comes for this request."""


class _End:
    """What a decoupled request's call answers once its model has finished."""


END = _End()


class ThreadSender:
    """A :class:`~inferd.runtimes.base.ResponseSender` from the model's thread to the stream's event loop."""

    __slots__ = ("_loop", "_put", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, put: Callable[[Outputs], None]) -> None:
        self._loop = loop
        self._put = put
        self.cancelled = False
        """Set when the stream was closed (its client went away): the model's next response stops it."""

    def send(self, outputs: Outputs) -> bool:
        if self.cancelled:
            return False
        try:
            self._loop.call_soon_threadsafe(self._put, outputs)
        except RuntimeError:  # the loop is closed: the server is stopping
            self.cancelled = True
            return False
        return True


class StreamCall:
    """A decoupled model's request on the one inference path: checked as any request, answered with
    :data:`END` when the model has finished (its responses went to ``sender``)."""

    __slots__ = ("prepared", "request", "routing", "sender")

    def __init__(self, request: InferenceRequest, sender: ThreadSender) -> None:
        self.request = request
        self.sender = sender
        self.prepared: GeneralPrepared | None = None
        self.routing: Routing | None = None

    def route(self) -> Routing:
        self.routing = routing_from(self.request.parameters, self.routing)
        return self.routing

    @property
    def model_name(self) -> str:
        return self.request.model_name

    @property
    def model_version(self) -> str | None:
        return self.request.model_version

    def prepare(self, loaded: Loaded, max_elements: int) -> GeneralPrepared:
        self.prepared = prepare_request(self.request, loaded.signature, loaded.scheduler.policy.max_batch_size,
                                        max_elements, loaded.labels)
        return self.prepared

    def respond(self, version: str, signature: Signature, prepared: Any, result: RunResult) -> _End:
        return END


def decoupled_sender(call: Call[Any], model: str) -> ResponseSender:
    """The sender of a call to a decoupled model; UNIMPLEMENTED, in Triton's words, for a unary call (whose
    ``endpoint`` names how it came: ``HTTP end point``, ``ModelInfer RPC``)."""
    if isinstance(call, StreamCall):
        return call.sender
    endpoint = getattr(call, "endpoint", "this endpoint")  # a Call may not say; the two general ones do
    raise InferError(ErrorCode.UNIMPLEMENTED,
                     f"{endpoint} {DECOUPLED_UNARY}: model {model!r} may answer a request with any number of "
                     f"responses; call it with gRPC ModelStreamInfer or POST /v2/models/{model}/generate_stream")


async def stream(dataplane: DataPlane, given: InferenceRequest | GeneralCall,
                 is_disconnected: Callable[[], bool] | None = None) -> AsyncGenerator[StreamResponse, None]:
    """See the module docstring; what :meth:`DataPlane.stream <inferd.dataplane.DataPlane.stream>` returns. A
    :class:`GeneralCall` carries its caller's shared memory regions to a model that answers once."""
    call = given if isinstance(given, GeneralCall) else GeneralCall(given)
    request = call.request
    model = await dataplane.ensure_loaded(request.model_name, request.model_version)
    loaded = model.loaded or model.require_loaded()
    if loaded.generator is not None:
        async for item in _generated(dataplane, request, model.version_text):
            yield item
    elif loaded.decoupled:
        async for item in _decoupled(dataplane, request, model, loaded.signature, is_disconnected):
            yield item
    else:
        yield StreamResponse(await dataplane.infer(call, is_disconnected), final=True)


async def _decoupled(dataplane: DataPlane, request: InferenceRequest, model: ModelVersion, signature: Signature,
                     is_disconnected: Callable[[], bool] | None) -> AsyncIterator[StreamResponse]:
    items: asyncio.Queue[Any] = asyncio.Queue()
    sender = ThreadSender(asyncio.get_running_loop(), items.put_nowait)
    call = StreamCall(request, sender)

    def gone() -> bool:
        return sender.cancelled or (is_disconnected is not None and is_disconnected())

    dataplane.submit(call, items.put_nowait, gone)
    try:
        while True:
            item = await items.get()
            if item is END:
                yield StreamResponse(None, final=True)
                return
            if isinstance(item, BaseException):
                raise item
            assert call.prepared is not None  # a response comes only from a prepared request
            yield StreamResponse(_response(model, signature, call.prepared, item), final=False)
    finally:
        sender.cancelled = True


def _response(model: ModelVersion, signature: Signature, prepared: GeneralPrepared,
              outputs: Mapping[str, np.ndarray]) -> InferenceResponse:
    """One response the model sent, checked against its signature as any model call's outputs (INTERNAL when
    it broke it), with the outputs the request asked for."""
    checked = check_outputs(signature, outputs, None)
    return build_response(model.name, model.version_text, signature, prepared, RunResult(checked, 0, 0, 0))


# -- generative models over the same stream ----------------------------------------------------------------
async def _generated(dataplane: DataPlane, request: InferenceRequest,
                     version: str) -> AsyncIterator[StreamResponse]:
    from inferd.generation.request import GenerationRequest

    prompt, fields = generation_inputs(request)
    events = await dataplane.generate(GenerationRequest(request.model_name, prompt=prompt,
                                                        model_version=request.model_version, **fields))
    try:
        async for event in events:
            final = event.finish_reason is not None
            if event.text or final:
                yield StreamResponse(_text_response(request, version, event), final)
    finally:
        await events.aclose()


def _text_response(request: InferenceRequest, version: str, event: GenerationEvent) -> InferenceResponse:
    text = np.empty(1, dtype=object)
    text[0] = event.text.encode("utf-8")
    parameters = None
    if event.finish_reason is not None:
        parameters = {"finish_reason": event.finish_reason, "prompt_tokens": event.prompt_tokens,
                      "completion_tokens": event.completion_tokens}
    return InferenceResponse(request.model_name, version, [ResponseOutput("text_output", "BYTES", [1], text)],
                             request.id, parameters)


def generation_inputs(request: InferenceRequest) -> tuple[str, dict[str, Any]]:
    """The prompt of a tensor request to a generative model (``text_input``, one string) and its sampling
    fields: the request's parameters (``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``), or a
    ``sampling_parameters`` input holding them as JSON (what Triton's vLLM backend takes)."""
    prompt: str | None = None
    fields: dict[str, Any] = {}
    for item in request.inputs:
        if item.name == "text_input":
            prompt = _one_string(item)
        elif item.name == "sampling_parameters":
            try:
                fields.update(_sampling(orjson.loads(_one_string(item))))
            except orjson.JSONDecodeError as exc:
                raise invalid(f"input 'sampling_parameters' is not a JSON object: {exc}") from None
        elif item.name not in _IGNORED_INPUTS:
            raise invalid(f"unknown input {item.name!r}: a generative model takes text_input (and optionally "
                          "sampling_parameters)")
    if prompt is None:
        raise invalid("a generative model's stream request needs the input text_input (BYTES, one string)")
    fields.update(_sampling(request.parameters or {}, strict=False))
    return prompt, fields


def _one_string(item: RequestInput) -> str:
    array = to_array(item.name, item.datatype, item.shape, item.data).reshape(-1)
    if item.datatype != "BYTES" or array.size != 1:
        raise invalid(f"input {item.name!r} must be one BYTES element, got {item.datatype} {list(item.shape)}")
    value = array[0]
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise invalid(f"input {item.name!r} is not valid UTF-8") from None


def _sampling(values: object, strict: bool = True) -> dict[str, Any]:
    """Sampling fields from a mapping; ``strict``: an unknown key is an error (request parameters also carry
    other things: priority, timeout, sequence ids)."""
    if not isinstance(values, dict):
        raise invalid("sampling parameters must be a JSON object")
    fields: dict[str, Any] = {}
    for name, value in values.items():
        kind = GENERATION_PARAMETERS.get(name)
        if kind is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int
                                                                                 and not isinstance(value, int)):
                raise invalid(f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}")
            fields[name] = kind(value)
        elif name == "stop":
            fields["stop"] = _stop(value)
        elif strict and name not in _IGNORED_INPUTS:
            raise invalid(f"sampling parameter {name!r} is not supported; supported: stop, "
                          f"{', '.join(GENERATION_PARAMETERS)}")
    return fields


def _stop(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise invalid("parameter 'stop' must be a string or a list of strings")
