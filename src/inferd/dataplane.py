"""The one place that knows how to answer "infer this request on that model".

REST, gRPC, the async queue, batch jobs and the CLI all call the same :class:`DataPlane`: every inference goes
through :meth:`DataPlane.submit` (or :meth:`DataPlane.infer`, the same for a coroutine), which does what every
inference needs once: resolve the model, schedule, statistics, data capture, errors. Transports only translate their
wire formats (to an :class:`~inferd.inference.InferenceRequest`, or a codec's own :class:`~inferd.calls.Call`) and
map :class:`InferError` codes to their own statuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib.metadata import version as package_version
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np

from inferd import heap
from inferd.calls import (
    DEFAULT_MAX_TENSOR_ELEMENTS,
    Call,
    GeneralCall,
    Prepared,
    Routing,
    build_response,
    captured_request,
    empty_outputs,
    parse_version,
)
from inferd.decoupled import StreamResponse, decoupled_sender
from inferd.decoupled import stream as stream_responses
from inferd.errors import ErrorCode, InferError, invalid, not_found
from inferd.inference import (
    ConfigTensor,
    DynamicBatching,
    IndexEntry,
    InferenceRequest,
    InferenceResponse,
    ModelConfiguration,
    ModelMetadata,
    ServerMetadata,
)
from inferd.load_parameters import check_unload_parameters, parse_load_parameters
from inferd.on_demand import ModelControl, OnDemand
from inferd.polling import RepositoryPoller
from inferd.repository import USES, Model, ModelRepository, ModelVersion, State, why_unavailable
from inferd.response_cache import ResponseCache, cache_key
from inferd.scheduling.policy import SchedulingPolicy
from inferd.scheduling.scheduler import RunResult
from inferd.shared_memory import SharedMemoryRegistry
from inferd.signature import Signature
from inferd.stats import ModelStats

if TYPE_CHECKING:
    from inferd.endpoints.service import Endpoints
    from inferd.generation.request import GenerationRequest
    from inferd.generation.scheduler import GenerationEvent, GenerationScheduler, Ticket
    from inferd.observability.capture import CaptureWriter

T = TypeVar("T")

log = logging.getLogger(__name__)


class DataPlane:
    """Inference, metadata, readiness and repository control over one :class:`ModelRepository`."""

    def __init__(self, repository: ModelRepository, *, extensions: Sequence[str] = (),
                 strict_readiness: bool = True, capture: CaptureWriter | None = None,
                 max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS, settle_heap: bool = False,
                 control: ModelControl | None = None) -> None:
        self.repository = repository
        self.settle_heap = settle_heap
        """Freeze long-lived objects out of the garbage collector's walks after loads (see inferd.heap);
        for a long-running server."""
        self.max_tensor_elements = max_tensor_elements
        """Most elements one input tensor may have; checked before its array is built."""
        self.capture = capture
        """Data capture (``[capture]`` in model.toml): where sampled requests and responses go."""
        self.cache: ResponseCache | None = None
        """The response cache of the models whose model.toml enables ``[cache]`` (None: no cache)."""
        self.endpoints: Endpoints | None = None
        """The server's endpoints (names in front of model variants), resolved in :meth:`submit`."""
        self.shared_memory: SharedMemoryRegistry | None = None
        """The system shared memory regions clients registered (None: the extension is off); the transports
        give each call its caller's regions."""
        self._extensions = list(extensions)
        self._strict_readiness = strict_readiness
        self._services: list[tuple[str, Callable[[], str], bool]] = []
        """Other parts of the server readiness reports on (see :meth:`add_service`)."""
        self._started = False
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inferd-load")
        """For loading and unloading, which block."""
        control = control or ModelControl()
        self.on_demand = OnDemand(repository, self._pool, control.on_demand) if control.on_demand else None
        """Model control on-demand: models load on their first request (None: every model loads at start)."""
        self.poller = (RepositoryPoller(repository, control.poll_s, self._pool, budget=self.on_demand)
                       if control.poll_s else None)
        """Repository polling: the models follow the folder's changes (None: only through the repository API)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every model in the repository (with model control on-demand: none, they load when asked for).
        Failures are recorded per model, never raised."""
        if self.on_demand is None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.repository.load_all)
        else:
            self.on_demand.start()
        if self.poller is not None:
            await self.poller.start()
        self._started = True
        if self.settle_heap:
            heap.settle()

    async def stop(self) -> None:
        """Stop polling, and loading and unloading on demand (before :meth:`close`)."""
        if self.poller is not None:
            await self.poller.stop()
        if self.on_demand is not None:
            await self.on_demand.stop()

    def close(self) -> None:
        if self.shared_memory is not None:
            self.shared_memory.close()
        self.repository.close()
        self._pool.shutdown(wait=True)

    # -- health and metadata -----------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the start-up load finished; with strict readiness, only if every model loaded (on demand:
        once started, as models load when asked for); and not while a service added as required
        (:meth:`add_service`) cannot work."""
        if not self._started:
            return False
        for _, why_not, required in self._services:
            if required and why_not():
                return False
        if not self._strict_readiness or self.on_demand is not None:
            return True
        return all(
            not m.reason and all(v.serving for v in m.versions.values())
            for m in self.repository.models()
        )

    def add_service(self, name: str, why_not: Callable[[], str], required: bool = False) -> None:
        """A part of the server beside the models (asynchronous inference) that readiness reports on: ``why_not``
        says why it cannot work now ('' when it can). The server is not ready while a ``required`` one cannot;
        any other is listed by :meth:`unavailable_services` (the ready route's body) and leaves readiness alone."""
        self._services.append((name, why_not, required))

    def unavailable_services(self) -> dict[str, str]:
        """The services added with :meth:`add_service` that cannot work now, and why."""
        found = {name: why_not() for name, why_not, _ in self._services}
        return {name: why for name, why in found.items() if why}

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("inferd", package_version("inferd"), list(self._extensions))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model (version) can serve now (not while it loads). Unknown model or version: NOT_FOUND
        (with model control on-demand, a model in the repository that is not loaded is not ready; asking does not
        load it)."""
        if self.repository.loading(name):
            return False
        if self.on_demand is not None and self.repository.known(name) is None and self.on_demand.can_load(name):
            return False
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
            inputs=[s.metadata() for s in signature.inputs],
            outputs=[s.to_dict() for s in signature.outputs],
            parameters={"sha256": chosen.sha256} if chosen.sha256 else None,
        )

    def signature(self, name: str, version: str | None = None) -> Signature:
        return self.repository.get(name, parse_version(version)).signature

    def loadable(self, name: str) -> bool:
        """Whether a request for ``name`` would load it (model control on-demand: in the repository, not loaded)."""
        return self.on_demand is not None and self.repository.known(name) is None and self.on_demand.can_load(name)

    async def ensure_loaded(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a request names, loaded first if it has to be (model control on-demand), for the routes and
        jobs that need a model's signature before their inference (KServe V1, SageMaker, batch jobs). Raises as
        :meth:`submit` answers: NOT_FOUND, UNAVAILABLE, or the load's error. An endpoint's name: the version a
        request to it would go to now (its variants are meant to share a signature)."""
        if self.endpoints is not None and name in self.endpoints.table.endpoints:
            name, version = self.endpoints.pick_model(name)
        number = parse_version(version)
        try:
            return self.repository.get(name, number)
        except InferError:
            if self.on_demand is None:
                raise
            if not self.on_demand.can_load(name):  # a load on its thread may have installed it since the first look
                return self.repository.get(name, number)
        done: asyncio.Future[InferError | None] = asyncio.get_running_loop().create_future()
        self.on_demand.after_load(name, partial(_settle, done))
        error = await done
        if error is not None:
            raise error
        return self.repository.get(name, number)

    def resolve(self, name: str, version: str | None, routing: Routing | None) -> tuple[str, str | None]:
        """The model and version a request naming ``name`` goes to: an endpoint's variant, picked as ``routing``
        forces or keys it (and recorded there), else ``name`` itself. For a route that needs the model before
        its calls (embeddings: the model's batch size), and then pins its calls to that variant."""
        if self.endpoints is None or name not in self.endpoints.table.endpoints:
            return name, version
        variant, _ = self.endpoints.choose(name, routing)
        return variant.model, variant.version_text

    # -- repository ------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        known = {m.name: m for m in self.repository.models()}
        entries: list[IndexEntry] = []
        for name in sorted(set(known) | set(self.repository.names())):
            model = known.get(name)
            if model is None and self.repository.loading(name):
                entries.append(IndexEntry(name, "", "LOADING", "its first load is under way"))
                continue
            entries.extend(_index_rows(name, model))
        return [e for e in entries if e.state == State.READY.value] if ready_only else entries

    async def load(self, name: str, parameters: Mapping[str, Any] | None = None) -> Model:
        """(Re)load a model, with Triton's load parameters if any (``config``, ``file:<path>``; see
        :mod:`inferd.load_parameters`). FAILED_PRECONDITION, with the reasons, when no version of it became ready;
        INVALID_ARGUMENT for bad parameters, before the model loaded now is touched. With model control on-demand,
        the load is under the memory budget like one a request starts (:meth:`OnDemand.within_budget`)."""
        parsed = parse_load_parameters(name, parameters)
        loop = asyncio.get_running_loop()

        def load() -> asyncio.Future[Model]:
            return loop.run_in_executor(self._pool, self.repository.load, name, parsed)

        model = await (load() if self.on_demand is None else self.on_demand.within_budget(name, load))
        if self.settle_heap:
            await loop.run_in_executor(self._pool, heap.release)  # a reload replaced the old version
        if model.latest_ready() is None:
            raise InferError(ErrorCode.FAILED_PRECONDITION, f"failed to load model {name!r}: {why_unavailable(model)}")
        return model

    async def unload(self, name: str, parameters: Mapping[str, Any] | None = None) -> Model:
        """Unload a model; ``parameters`` may hold Triton's ``unload_dependents`` (inferd models have none)."""
        check_unload_parameters(name, parameters)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._pool, self.repository.unload, name)
        if self.settle_heap:
            await loop.run_in_executor(self._pool, heap.release)
        return model

    # -- inference -------------------------------------------------------------------------------
    def submit(self, call: Call[T], answer: Callable[[T | BaseException], None],
              is_disconnected: Callable[[], bool] | None = None) -> None:
        """The one inference path: resolve the model version the call names, have the call check its inputs
        against it, queue it on the version's scheduler (which may batch it with others), and when the model has
        run, record the statistics, capture the data the model's ``[capture]`` asks for and give ``answer`` the
        call's answer; or the error (an :class:`InferError`, or any other exception for a bug). ``answer`` is
        called once, maybe before this returns. ``is_disconnected`` tells whether the caller has gone away: a
        request still queued then is dropped without running. A call naming an endpoint goes to the variant its
        endpoint picks (:meth:`~inferd.endpoints.service.Endpoints.route`), counted per variant."""
        started = perf_counter_ns()
        endpoints = self.endpoints
        if endpoints is not None and call.model_name in endpoints.table.endpoints:
            try:
                call = answer = endpoints.route(call, answer, started)
            except InferError as exc:
                answer(exc)
                return
        try:
            version = call.model_version
            model = self.repository.get(call.model_name, None if version is None else parse_version(version))
        except InferError as exc:
            if self.on_demand is not None and self.on_demand.can_load(call.model_name):
                self.on_demand.after_load(call.model_name,
                                          partial(self._after_load, call, answer, is_disconnected, started))
                return
            try:  # a load on its thread may have installed the model since the first look (on demand)
                model = self.repository.get(call.model_name, None if version is None else parse_version(version))
            except InferError:
                answer(exc)
                return
        self._schedule(model, call, answer, is_disconnected, started)

    def _after_load(self, call: Call[T], answer: Callable[[T | BaseException], None],
                    is_disconnected: Callable[[], bool] | None, started: int, error: InferError | None) -> None:
        """A request that waited for its model's load (model control on-demand): on with it, or the load's error."""
        if error is not None:
            answer(error)
            return
        try:
            version = call.model_version
            model = self.repository.get(call.model_name, None if version is None else parse_version(version))
        except InferError as exc:
            answer(exc)
            return
        self._schedule(model, call, answer, is_disconnected, started, waited_us=(perf_counter_ns() - started) // 1000)

    def _schedule(self, model: ModelVersion, call: Call[T], answer: Callable[[T | BaseException], None],
                  is_disconnected: Callable[[], bool] | None, started: int, waited_us: int = 0) -> None:
        """Prepare the call on its version and queue it. ``waited_us``: how long it waited for the model's load,
        which counts against its timeout (the request's, else the model's queue timeout)."""
        try:
            loaded = model.loaded or model.require_loaded()
            sender = decoupled_sender(call, model.name) if loaded.decoupled else None  # unary calls: refused
            prepared = call.prepare(loaded, self.max_tensor_elements)
            timeout_us = _left_after_load(model.name, prepared.timeout_us or loaded.scheduler.policy.default_timeout_us,
                                          waited_us) if waited_us else prepared.timeout_us
        except InferError as exc:
            model.stats.record_failure(perf_counter_ns() - started, exc.code.value)
            answer(exc)
            return
        except Exception as exc:  # a codec's bug: the caller still gets an answer
            answer(exc)
            return
        key = None
        if model.cache is not None and self.cache is not None and sender is None:
            looked = perf_counter_ns()
            key = cache_key(model.cache_scope, prepared.arrays)
            hit = self.cache.get(key)
            if hit is not None:
                self._answer_from_cache(model, loaded.signature, call, prepared, started, hit, answer)
                return
            model.stats.cache_miss.add(perf_counter_ns() - looked)
        waiter = _Waiter(self, model, loaded.signature, call, prepared, started, answer)
        waiter.cache_key = key
        model.in_flight += 1  # before any answer: the waiter counts it down
        if prepared.rows == 0:  # an empty batch: answered here, the model never sees it
            self._answer_empty(waiter, model, loaded.signature, prepared, started, answer)
            return
        model.last_use = next(USES)
        if loaded.sequences is not None:  # a stateful model: the request waits its turn in its sequence first
            loaded.sequences.submit(prepared.arrays, prepared.rows, waiter, prepared.parameters, prepared.priority,
                                    timeout_us, is_disconnected)
            return
        loaded.scheduler.submit(prepared.arrays, prepared.rows, waiter, prepared.priority, timeout_us,
                                is_disconnected, prepared.key, sender)

    @staticmethod
    def _answer_empty(waiter: _Waiter, model: ModelVersion, signature: Signature, prepared: Prepared, started: int,
                      answer: Callable[[Any], None]) -> None:
        try:
            outputs = empty_outputs(signature, prepared.answered)
        except InferError as exc:
            waiter.set_exception(exc)  # counts the failure and the request out
            return
        waiter.set_result(RunResult(outputs, 0, 0, 0, ran_batch=False))

    def _answer_from_cache(self, model: ModelVersion, signature: Signature, call: Call[T], prepared: Prepared,
                           started: int, outputs: dict[str, np.ndarray],
                           answer: Callable[[T | BaseException], None]) -> None:
        """A response cache hit: the call's answer from the cached outputs, as if the model had run."""
        result = RunResult(outputs, 0, 0, prepared.rows, ran_batch=False)
        try:
            response = call.respond(model.version_text, signature, prepared, result)
            if model.capture is not None:
                self.capture_inference(model, signature, prepared, result)
        except Exception as exc:  # never leave the caller without an answer
            answer(exc)
            return
        model.stats.record_cache_hit(prepared.rows, perf_counter_ns() - started)
        answer(response)

    def cache_result(self, model: ModelVersion, key: bytes, result: RunResult) -> None:
        """Keep a successful result in the response cache (the request's own rows)."""
        if self.cache is not None and model.cache is not None:
            self.cache.put(key, model.name, result.outputs, model.cache.ttl_s)

    @overload
    async def infer(self, request: InferenceRequest,
                    is_disconnected: Callable[[], bool] | None = None) -> InferenceResponse: ...

    @overload
    async def infer(self, request: Call[T], is_disconnected: Callable[[], bool] | None = None) -> T: ...

    async def infer(self, request: InferenceRequest | Call[Any],
                    is_disconnected: Callable[[], bool] | None = None) -> Any:
        """:meth:`submit` for a coroutine: an :class:`InferenceRequest` is answered with an
        :class:`InferenceResponse`, any other call as it answers. A cancelled caller's request still waiting is
        dropped, as one whose client went away."""
        call = GeneralCall(request) if type(request) is InferenceRequest else request
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def gone() -> bool:
            return future.done() or (is_disconnected is not None and is_disconnected())

        self.submit(call, partial(_settle, future), gone)  # type: ignore[arg-type]
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def stream(self, request: InferenceRequest | GeneralCall,
               is_disconnected: Callable[[], bool] | None = None) -> AsyncGenerator[StreamResponse, None]:
        """The one streaming entry (gRPC ``ModelStreamInfer``, HTTP ``generate_stream``): the responses to one
        request as they come, each with Triton's final flag; a decoupled model's through :meth:`submit`, a
        generative model's text through :meth:`generate`, any other model's one response through :meth:`infer`.
        Raises (InferError) where the request fails; closing it early stops the model. See
        :mod:`inferd.decoupled`."""
        return stream_responses(self, request, is_disconnected)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """The one generation path: resolve the generative model the request names (loading it first under
        model control on-demand), check it, tokenize its prompt (off the event loop) and queue it on the model's
        generation scheduler. Raises before anything is generated (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE when
        the queue is full); then the events follow as the tokens come, the last with a finish reason and the
        usage. Closing the iterator early (a client that went away) frees the request's slot before the next
        decode step. The model version counts the generation in flight until it ends, so that it is never
        unloaded (idle, or to make room) under it."""
        from inferd.generation.request import output_budget, prompt_tokens

        request.check()
        name, version = request.model_name, request.model_version
        started, count = perf_counter_ns(), None
        if self.endpoints is not None and name in self.endpoints.table.endpoints:
            variant, stats = self.endpoints.choose(name, request.routing)
            name, version, count = variant.model, variant.version_text, stats.record
        try:
            model = await self.ensure_loaded(name, version)
            generator = self._generator_of(model)
            loop = asyncio.get_running_loop()
            tokens = await loop.run_in_executor(None, prompt_tokens, generator.engine, request)
            budget = output_budget(request, generator.limits, generator.context, len(tokens))
        except InferError:
            if count is not None:
                count(perf_counter_ns() - started, False)
            raise
        events: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        release = _Release(model)

        def sink(event: GenerationEvent | BaseException) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)
            failed = isinstance(event, BaseException)
            if failed or event.finish_reason is not None:  # type: ignore[union-attr]
                loop.call_soon_threadsafe(release)
                if count is not None:  # the endpoint variant's statistics, changed on the event loop
                    loop.call_soon_threadsafe(count, perf_counter_ns() - started, not failed)

        model.in_flight += 1
        model.last_use = next(USES)
        try:
            ticket = generator.submit(tokens, budget, request.sampling(generator.limits), request.stop, sink)
        except BaseException:
            release()
            if count is not None:
                count(perf_counter_ns() - started, False)
            raise
        return _events(events, ticket, release)

    def generator(self, name: str, version: str | None = None) -> GenerationScheduler:
        """A generative model's scheduler; INVALID_ARGUMENT naming the model when it is a tensor model."""
        return self._generator_of(self.repository.get(name, parse_version(version)))

    @staticmethod
    def _generator_of(model: ModelVersion) -> GenerationScheduler:
        loaded = model.require_loaded()
        if loaded.generator is None:
            raise invalid(f"model {model.name!r} is not a generative model (it takes tensors: use the V2 infer "
                          "route)")
        return loaded.generator

    def capture_inference(self, model: ModelVersion, signature: Signature, prepared: Prepared,
                          result: RunResult) -> None:
        """Data capture (the model's ``[capture]``): sampled and queued, never waited for."""
        if model.capture is None or self.capture is None:
            return
        request = captured_request(model.name, signature, prepared)
        response = build_response(model.name, model.version_text, signature, prepared, result, into_regions=False)
        self.capture.offer(model.capture, model.name, model.version, request, response)

    # -- configuration and statistics ----------------------------------------------------------
    def model_config(self, name: str, version: str | None = None) -> ModelConfiguration:
        """The model's configuration as Triton describes it: with a batch limit, the batch dimension is
        implied and left out of the tensor dimensions."""
        chosen = self.repository.get(name, parse_version(version))
        model = self.repository.find(name)
        signature = chosen.signature
        batched = bool(chosen.max_batch_size)
        formats = {t.name: t.format for t in model.config.inputs}
        sequences = chosen.require_loaded().sequences
        return ModelConfiguration(
            name=name,
            platform=chosen.runtime_name,
            max_batch_size=chosen.max_batch_size,
            inputs=[ConfigTensor.of(s, batched, formats.get(s.name, "FORMAT_NONE")) for s in signature.inputs],
            outputs=[ConfigTensor.of(s, batched) for s in signature.outputs],
            description=model.config.description,
            dynamic_batching=None if sequences else _dynamic_batching(chosen.scheduler.policy),
            sequence_batching=sequences.plan.config if sequences else None,
            decoupled=model.config.model_transaction_policy.decoupled,
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


class _Waiter:
    """A request waiting for its model (a :class:`~inferd.scheduling.scheduler.Waiter`): told the result, it records
    the statistics, captures data if the model asks for it, and hands the call's answer on; told the error, it
    records the failure and hands the error on."""

    __slots__ = ("_answer", "_call", "_dataplane", "_done", "_model", "_prepared", "_prepared_at", "_signature",
                 "_started", "cache_key")

    def __init__(self, dataplane: DataPlane, model: ModelVersion, signature: Signature, call: Call[Any],
                 prepared: Prepared, started: int, answer: Callable[[Any], None]) -> None:
        self._dataplane = dataplane
        self._model = model
        self._signature = signature
        self._call = call
        self._prepared = prepared
        self._started = started
        self._prepared_at = perf_counter_ns()
        self._answer = answer
        self._done = False
        self.cache_key: bytes | None = None
        """Where to keep the result in the response cache (None: the model's results are not cached)."""

    def done(self) -> bool:
        return self._done

    def set_result(self, result: RunResult) -> None:
        if self._done:
            return
        self._done = True
        self._model.in_flight -= 1
        done = perf_counter_ns()
        started, prepared_at, prepared, model = self._started, self._prepared_at, self._prepared, self._model
        model.stats.record_success(prepared.rows, done - started, result.queue_ns, prepared_at - started,
                                   result.infer_ns, done - prepared_at - result.queue_ns - result.infer_ns,
                                   result.batch_rows if result.ran_batch else None)
        try:
            answer = self._call.respond(model.version_text, self._signature, prepared, result)
            if model.capture is not None:
                self._dataplane.capture_inference(model, self._signature, prepared, result)
            if self.cache_key is not None:
                self._dataplane.cache_result(model, self.cache_key, result)
        except Exception as exc:  # never leave the caller without an answer
            self._answer(exc)
            return
        self._answer(answer)

    def set_exception(self, error: BaseException) -> None:
        if self._done:
            return
        self._done = True
        self._model.in_flight -= 1
        if isinstance(error, InferError):
            self._model.stats.record_failure(perf_counter_ns() - self._started, error.code.value)
        self._answer(error)


class _Release:
    """Counts a generation out of its model version's requests in flight, once (when it ends or is dropped)."""

    __slots__ = ("_model",)

    def __init__(self, model: ModelVersion) -> None:
        self._model: ModelVersion | None = model

    def __call__(self) -> None:
        if self._model is not None:
            self._model.in_flight -= 1
            self._model.stats.last_inference_ms = time.time_ns() // 1_000_000
            self._model = None


async def _events(events: asyncio.Queue[GenerationEvent | BaseException], ticket: Ticket,
                  release: Callable[[], None]) -> AsyncGenerator[GenerationEvent, None]:
    finished = False
    try:
        while True:
            event = await events.get()
            if isinstance(event, BaseException):
                finished = True
                release()
                raise event
            if event.finish_reason is not None:
                finished = True
                release()  # counted out before the caller sees the end (the sink's own release may come later)
            yield event
            if finished:
                return
    finally:
        if not finished:
            ticket.cancel()
        release()


def _left_after_load(name: str, timeout_us: int, waited_us: int) -> int:
    """What is left of a request's timeout (µs, 0: none) after it waited ``waited_us`` for its model's load;
    DEADLINE_EXCEEDED when nothing is."""
    if not timeout_us:
        return 0
    if waited_us >= timeout_us:
        raise InferError(ErrorCode.DEADLINE_EXCEEDED,
                         f"request to model {name!r} timed out after {timeout_us} µs: it waited {waited_us} µs "
                         "for the model to load")
    return timeout_us - waited_us


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():  # its caller may have given up
        future.set_result(outcome)


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
    rows = [IndexEntry(name, str(v.version), *v.index_state) for v in model.versions.values()]
    if model.reload_error:  # repository polling: the folder changed, and the change could not be served
        rows = [IndexEntry(r.name, r.version, r.state, r.reason or model.reload_error) for r in rows]
    return rows
