"""The one place that knows how to answer "infer this request on that model".

REST, gRPC, the async queue, batch jobs and the CLI all call the same :class:`DataPlane`; they only
translate their wire formats to the types in :mod:`inferd.inference` and map :class:`InferError` codes to
their own statuses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib.metadata import version as package_version
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd import heap
from inferd.codecs.v2_plain import PlainRequest, PlainRequestPlan
from inferd.errors import ErrorCode, InferError, invalid, not_found
from inferd.inference import (
    DynamicBatching,
    IndexEntry,
    InferenceRequest,
    InferenceResponse,
    ModelConfiguration,
    ModelMetadata,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    ServerMetadata,
)
from inferd.repository import Model, ModelRepository, ModelVersion, State, why_unavailable
from inferd.scheduling.policy import SchedulingPolicy
from inferd.scheduling.scheduler import RunResult
from inferd.signature import Signature, TensorSpec, check_all_inputs_present, check_request_input
from inferd.stats import ModelStats
from inferd.tensors import element_count, to_array

if TYPE_CHECKING:
    from inferd.observability.capture import CaptureWriter

log = logging.getLogger(__name__)

EncodedAnswer = tuple[bytes, int | None] | BaseException
"""How an inference over REST ends: the response body and its JSON header's length (None: no output goes as
binary data), or the error."""

DEFAULT_MAX_TENSOR_ELEMENTS = 1024**3
"""Most elements per input tensor unless the server's settings say otherwise (``max_tensor_elements``)."""


class DataPlane:
    """Inference, metadata, readiness and repository control over one :class:`ModelRepository`."""

    def __init__(self, repository: ModelRepository, *, extensions: Sequence[str] = (),
                 strict_readiness: bool = True, capture: CaptureWriter | None = None,
                 max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS, settle_heap: bool = False) -> None:
        self.repository = repository
        self.settle_heap = settle_heap
        """Freeze long-lived objects out of the garbage collector's walks after loads (see inferd.heap);
        for a long-running server."""
        self.max_tensor_elements = max_tensor_elements
        """Most elements one input tensor may have; checked before its array is built."""
        self.capture = capture
        """Data capture (``[capture]`` in model.toml): where sampled requests and responses go."""
        self._extensions = list(extensions)
        self._strict_readiness = strict_readiness
        self._started = False
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inferd-load")
        """For loading and unloading, which block."""

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every model in the repository. Failures are recorded per model, never raised."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.repository.load_all)
        self._started = True
        if self.settle_heap:
            heap.settle()

    def close(self) -> None:
        for model in list(self.repository.models()):
            if any(v.state is State.READY for v in model.versions.values()):
                self.repository.unload(model.name)
        self._pool.shutdown(wait=True)

    # -- health and metadata -----------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the start-up load finished; with strict readiness, only if every model loaded."""
        if not self._started:
            return False
        if not self._strict_readiness:
            return True
        return all(
            not m.reason and all(v.serving for v in m.versions.values())
            for m in self.repository.models()
        )

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("inferd", package_version("inferd"), list(self._extensions))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model (version) can serve now. Unknown model or version: NOT_FOUND."""
        model = self.repository.find(name)
        if version is None:
            latest = model.latest_ready()
            return latest is not None and latest.serving
        number = parse_version(version)
        if number not in model.versions:
            raise not_found(f"model {name!r} has no version {version}")
        return model.versions[number].serving

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        chosen = self.repository.get(name, parse_version(version))
        model = self.repository.find(name)
        ready = sorted(v.version for v in model.versions.values() if v.state is State.READY)
        signature = chosen.signature
        return ModelMetadata(
            name=name,
            versions=[str(v) for v in ready],
            platform=chosen.runtime_name,
            inputs=[s.to_dict() for s in signature.inputs],
            outputs=[s.to_dict() for s in signature.outputs],
            parameters={"sha256": chosen.sha256} if chosen.sha256 else None,
        )

    def signature(self, name: str, version: str | None = None) -> Signature:
        return self.repository.get(name, parse_version(version)).signature

    # -- repository ------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        known = {m.name: m for m in self.repository.models()}
        entries: list[IndexEntry] = []
        for name in sorted(set(known) | set(self.repository.names())):
            model = known.get(name)
            entries.extend(_index_rows(name, model))
        return [e for e in entries if e.state == State.READY.value] if ready_only else entries

    async def load(self, name: str) -> Model:
        """(Re)load a model. FAILED_PRECONDITION, with the reasons, when no version of it became ready."""
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._pool, self.repository.load, name)
        if self.settle_heap:
            await loop.run_in_executor(self._pool, heap.release)  # a reload replaced the old version
        if model.latest_ready() is None:
            raise InferError(ErrorCode.FAILED_PRECONDITION, f"failed to load model {name!r}: {why_unavailable(model)}")
        return model

    async def unload(self, name: str) -> Model:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._pool, self.repository.unload, name)
        if self.settle_heap:
            await loop.run_in_executor(self._pool, heap.release)
        return model

    # -- inference -------------------------------------------------------------------------------
    async def infer(self, request: InferenceRequest,
                    is_disconnected: Callable[[], bool] | None = None) -> InferenceResponse:
        """Validate the request against the model's signature, queue it on the model's scheduler (which may
        batch it with others) and check what the model returned. ``is_disconnected`` tells whether the caller
        has gone away; a request still queued then is dropped without running."""
        started = perf_counter_ns()
        model = self.repository.get(request.model_name, parse_version(request.model_version))
        try:
            loaded = model.require_loaded()
            signature = loaded.signature
            scheduler = loaded.scheduler
            arrays, batch_size = prepare_inputs(signature, request.inputs, self.max_tensor_elements)
            if batch_size is not None and batch_size > scheduler.policy.max_batch_size:
                raise invalid(f"a batch of {batch_size} exceeds the model's max_batch_size of "
                              f"{scheduler.policy.max_batch_size}")
            wanted = requested_outputs(signature, request.outputs)
            priority, timeout_us = _scheduling_parameters(request.parameters)
            prepared = perf_counter_ns()
            result = await scheduler.submit(arrays, batch_size or 1, priority, timeout_us, is_disconnected)
            outputs = []
            datatypes = signature.output_datatypes  # the scheduler checked the outputs: each has this datatype
            for name in wanted:
                array = result.output(name)
                outputs.append(ResponseOutput(name, datatypes[name], list(array.shape), array))
        except InferError as exc:
            model.stats.record_failure(perf_counter_ns() - started, exc.code.value)
            raise
        done = perf_counter_ns()
        model.stats.record_success(batch_size or 1, done - started, result.queue_ns, prepared - started,
                                   result.infer_ns, done - prepared - result.queue_ns - result.infer_ns,
                                   result.batch_rows if result.ran_batch else None)
        response = InferenceResponse(request.model_name, str(model.version), outputs, request.id)
        if model.capture is not None and self.capture is not None:  # data capture: sampled, queued, never waits
            self.capture.offer(model.capture, model.name, model.version, request, response)
        return response

    async def infer_plain(self, payload: Any, model_name: str, model_version: str | None = None,
                          is_disconnected: Callable[[], bool] | None = None, tail: memoryview | None = None,
                          ) -> tuple[bytes, int | None] | None:
        """:meth:`infer_plain_soon` for a coroutine: the response body and, when an output goes as binary data,
        its JSON header's length; None when the request is not in the plain form. A cancelled caller's request
        still waiting is dropped, as one whose client went away."""
        future: asyncio.Future[EncodedAnswer] = asyncio.get_running_loop().create_future()

        def gone() -> bool:
            return future.done() or (is_disconnected is not None and is_disconnected())

        if not self.infer_plain_soon(payload, model_name, model_version, gone, tail, partial(_settle, future)):
            return None
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def infer_plain_soon(self, payload: Any, model_name: str, model_version: str | None,
                         is_disconnected: Callable[[], bool] | None, tail: memoryview | None,
                         answer: Callable[[EncodedAnswer], None]) -> bool:
        """Answer a V2 request in the plain form (see :mod:`inferd.codecs.v2_plain`): its parsed JSON and, for the
        binary tensor extension, the bytes after it (``tail``). ``answer`` is called once, maybe before this
        returns, with the response body and, when an output goes as binary data, the length of its JSON header;
        or with the error. The same scheduler, statistics and errors as :meth:`infer`, without its request and
        response objects, and without a coroutine. False, having done nothing, when the request is not in that
        form, names no ready model version, or the version captures data: the caller then decodes it and calls
        :meth:`infer`, which says what is wrong."""
        started = perf_counter_ns()
        try:
            model = self.repository.get(model_name, None if model_version is None else parse_version(model_version))
        except InferError:
            return False
        loaded = model.loaded
        plan = None if loaded is None or model.capture is not None else loaded.plain
        read = None if plan is None else plan.read(payload, self.max_tensor_elements, tail)
        if read is None:
            return False
        assert loaded is not None
        assert plan is not None
        call = _PlainCall(model, model_name, read, started, answer)
        loaded.scheduler.submit_nowait(read.arrays, read.rows, call, is_disconnected, plan.batch_key)
        return True

    # -- configuration and statistics ----------------------------------------------------------
    def model_config(self, name: str, version: str | None = None) -> ModelConfiguration:
        """The model's configuration as Triton describes it: with a batch limit, the batch dimension is
        implied and left out of the tensor dimensions."""
        chosen = self.repository.get(name, parse_version(version))
        model = self.repository.find(name)
        signature = chosen.signature
        drop = 1 if chosen.max_batch_size else 0
        return ModelConfiguration(
            name=name,
            platform=chosen.runtime_name,
            max_batch_size=chosen.max_batch_size,
            inputs=[TensorSpec(s.name, s.datatype, s.shape[drop:]) for s in signature.inputs],
            outputs=[TensorSpec(s.name, s.datatype, s.shape[drop:]) for s in signature.outputs],
            description=model.config.description,
            dynamic_batching=_dynamic_batching(chosen.scheduler.policy),
        )

    def statistics(self, name: str | None = None, version: str | None = None) -> list[ModelStats]:
        """Statistics of every ready model version, or of one model (all its ready versions, or one)."""
        models = list(self.repository.models()) if name is None else [self.repository.find(name)]
        number = parse_version(version)
        if number is not None:
            return [self.repository.get(name or "", number).stats]
        return [
            v.stats for m in models for _, v in sorted(m.versions.items()) if v.state is State.READY
        ]


class _PlainCall:
    """A plain request waiting for its model (a :class:`~inferd.scheduling.scheduler.Waiter`): told the result, it
    records the statistics, encodes the response and hands it to ``answer``; told the error, it hands that on."""

    __slots__ = ("_answer", "_done", "_model", "_name", "_prepared", "_read", "_started")

    def __init__(self, model: ModelVersion, name: str, read: PlainRequest, started: int,
                 answer: Callable[[EncodedAnswer], None]) -> None:
        self._model = model
        self._name = name
        self._read = read
        self._started = started
        self._prepared = perf_counter_ns()
        self._answer = answer
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: RunResult) -> None:
        self._done = True
        done = perf_counter_ns()
        started, prepared, read, model = self._started, self._prepared, self._read, self._model
        model.stats.record_success(read.rows, done - started, result.queue_ns, prepared - started, result.infer_ns,
                                   done - prepared - result.queue_ns - result.infer_ns,
                                   result.batch_rows if result.ran_batch else None)
        try:
            body = PlainRequestPlan.encode(self._name, str(model.version), read, result)
        except Exception as exc:  # never leave the caller without an answer
            self._answer(exc)
            return
        self._answer(body)

    def set_exception(self, error: BaseException) -> None:
        self._done = True
        if isinstance(error, InferError):
            self._model.stats.record_failure(perf_counter_ns() - self._started, error.code.value)
        self._answer(error)


def _settle(future: asyncio.Future[EncodedAnswer], outcome: EncodedAnswer) -> None:
    if not future.done():  # its caller may have given up
        future.set_result(outcome)


def parse_version(version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not (version.isascii() and version.isdigit()) or int(version) < 1:  # "²".isdigit() is True
        raise invalid(f"model version must be a positive integer, got {version!r}")
    return int(version)


def prepare_inputs(signature: Signature, inputs: Sequence[RequestInput],
                   max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS) -> tuple[dict[str, np.ndarray], int | None]:
    """Check each request input against the signature and turn its data into an array.

    Returns the arrays by name and, for a batched model, the batch size all inputs agree on. An input whose
    shape holds more than ``max_elements`` elements is refused before anything is allocated for it.
    """
    arrays: dict[str, np.ndarray] = {}
    for item in inputs:
        name = item.name
        if name in arrays:
            raise invalid(f"input {name!r} appears more than once")
        spec = signature.input(name)
        if spec is None or item.datatype != spec.datatype or not spec.accepts_shape(item.shape):
            check_request_input(spec, name, item.datatype, item.shape, signature.input_names())  # raises
            assert spec is not None
        count = element_count(item.shape)
        if count > max_elements:
            raise invalid(f"input {name!r}: shape {list(item.shape)} has {count} elements, "
                          f"over the limit of {max_elements} per tensor (max_tensor_elements)")
        arrays[name] = to_array(name, spec.datatype, item.shape, item.data)
    if len(arrays) != len(signature.inputs):  # every name is known and appears once: only missing ones differ
        check_all_inputs_present(signature, arrays)
    if not signature.batched:
        return arrays, None
    batch_size: int | None = None
    for array in arrays.values():
        if batch_size is None:
            batch_size = array.shape[0]
        elif array.shape[0] != batch_size:
            listed = ", ".join(f"{n!r} has {a.shape[0]}" for n, a in arrays.items())
            raise invalid(f"inputs disagree on the batch size: {listed}")
    return arrays, batch_size


def requested_outputs(signature: Signature, outputs: Sequence[RequestOutput] | None) -> Sequence[str]:
    if not outputs:
        return signature.output_name_tuple
    available = signature.output_name_tuple
    names = [o.name for o in outputs]
    unknown = [n for n in names if n not in available]
    if unknown:
        listed = ", ".join(map(repr, available))
        raise invalid(f"unknown output {', '.join(map(repr, unknown))}; the model gives {listed}")
    return names


def _scheduling_parameters(parameters: dict[str, Any] | None) -> tuple[object, int | None]:
    """The V2 reserved parameters ``priority`` and ``timeout`` (microseconds in the queue)."""
    if not parameters:
        return None, None
    timeout = parameters.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise invalid(f"timeout must be a non-negative integer number of microseconds, got {timeout!r}")
    return parameters.get("priority"), timeout


def _dynamic_batching(policy: SchedulingPolicy) -> DynamicBatching | None:
    if not policy.dynamic_batching:
        return None
    return DynamicBatching(policy.preferred_batch_sizes, policy.max_queue_delay_us, policy.priority_levels,
                           policy.default_priority)


def _index_rows(name: str, model: Model | None) -> list[IndexEntry]:
    if model is None:
        return [IndexEntry(name, "", State.UNLOADED.value)]
    if model.reason or not model.versions:
        return [IndexEntry(name, "", State.UNAVAILABLE.value, model.reason)]
    return [IndexEntry(name, str(v.version), v.state.value, v.reason) for v in model.versions.values()]
