"""Sequence batching: the requests of a stateful model come in sequences, each named by the request's
``sequence_id`` parameter and opened and closed by ``sequence_start`` and ``sequence_end``, as in Triton.

A :class:`SequenceBatcher` sits in front of the model's :class:`~inferd.scheduling.scheduler.Scheduler`. Each
live sequence has a queue of its own: its requests run one at a time and in order (the next is handed to the
scheduler when the one before has been answered), so a request always sees the state its predecessor left.
Requests of different sequences are handed over as they come, and the scheduler batches them as it batches any
requests (one row per sequence). Before a request is handed over it gets its sequence's control tensors (START,
END, READY, CORRID) and implicit state (the outputs of the sequence's previous request, fed back as inputs);
the state outputs are kept when it has run, and never reach the client.

A sequence with no request for ``max_sequence_idle_microseconds`` is released (its state dropped, its slot freed);
its id is remembered for a while, so that a later request with it and no start is refused with a reason.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import monotonic, perf_counter_ns
from typing import Any

import numpy as np

from inferd.errors import ErrorCode, InferError, invalid, unavailable
from inferd.scheduling.scheduler import RunResult, Scheduler, Waiter
from inferd.sequence_config import ControlInputConfig, SequenceBatchingConfig, StateConfig
from inferd.signature import FREE, Signature, TensorSpec
from inferd.tensors import numpy_dtype

Arrays = dict[str, np.ndarray]
SequenceId = int | str

_REMEMBERED = 4096
"""Released sequence ids remembered, to say why a later request with one of them is refused."""
_UINT64_LIMIT = 2**64
_INT_LIMITS = {"UINT64": (0, 2**64), "INT64": (-(2**63), 2**63), "UINT32": (0, 2**32), "INT32": (-(2**31), 2**31)}


@dataclass(frozen=True, slots=True)
class SequencePlan:
    """A sequence model's controls and state, checked against its signature at load."""

    config: SequenceBatchingConfig
    signature: Signature
    """What clients see: the model's signature without the control and state tensors."""
    candidates: int
    """Live sequences at once."""
    controls: dict[tuple[bool, bool], Arrays]
    """The START, END and READY tensors of a request, by (start, end)."""
    corrid: tuple[tuple[ControlInputConfig, TensorSpec], ...]
    initial_state: Arrays
    states: tuple[StateConfig, ...]


def plan_sequences(config: SequenceBatchingConfig, model: Signature, max_batch_size: int,
                   instances: int) -> SequencePlan:
    """Check the ``[sequence_batching]`` table against the model's signature (ValueError naming what is wrong)."""
    hidden_inputs: dict[str, TensorSpec] = {}
    for name, datatype in [(c.name, c.input_datatype) for c in config.control_input] + [
            (s.input_name, s.datatype) for s in config.state]:
        spec = model.input(name)
        if spec is None:
            raise ValueError(f"[sequence_batching]: the model has no input {name!r}; its inputs are "
                             f"{', '.join(map(repr, model.input_names()))}")
        if spec.datatype != datatype:
            raise ValueError(f"[sequence_batching]: input {name!r} is {spec.datatype}, the control or state "
                             f"for it is {datatype}")
        hidden_inputs[name] = spec
    outputs = {s.name: s for s in model.outputs}
    for state in config.state:
        found = outputs.get(state.output_name)
        if found is None or found.datatype != state.datatype:
            raise ValueError(f"[sequence_batching]: the model has no {state.datatype} output {state.output_name!r} "
                             f"for state {state.input_name!r}")
    hidden_outputs = {s.output_name for s in config.state}
    signature = Signature(tuple(s for s in model.inputs if s.name not in hidden_inputs),
                          tuple(s for s in model.outputs if s.name not in hidden_outputs), may_batch=model.may_batch)
    batched = model.batched
    flags = [c for c in config.control_input if c.kind != "CONTROL_SEQUENCE_CORRID"]
    controls = {(start, end): {c.name: _control(c, hidden_inputs[c.name], batched, start, end) for c in flags}
                for start in (False, True) for end in (False, True)}
    corrid = tuple((c, hidden_inputs[c.name]) for c in config.control_input if c.kind == "CONTROL_SEQUENCE_CORRID")
    initial = {s.input_name: _initial(s, batched) for s in config.state}
    default = max(1, max_batch_size) * instances if config.strategy == "direct" else 1024
    return SequencePlan(config, signature, config.max_candidate_sequences or default, controls, corrid, initial,
                        tuple(config.state))


def _shape(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    """A control tensor's shape for one request: one row of the batch, free dimensions of 1."""
    dims = spec.shape[1:] if batched else spec.shape
    return ((1,) if batched else ()) + tuple(1 if d == FREE else d for d in dims)


def _control(control: ControlInputConfig, spec: TensorSpec, batched: bool, start: bool, end: bool) -> np.ndarray:
    on = {"CONTROL_SEQUENCE_START": start, "CONTROL_SEQUENCE_END": end, "CONTROL_SEQUENCE_READY": True}[control.kind]
    value = control.false_true[1 if on else 0]
    array = np.full(_shape(spec, batched), value, dtype=numpy_dtype(spec.datatype))
    array.flags.writeable = False
    return array


def _initial(state: StateConfig, batched: bool) -> np.ndarray:
    shape = ((1,) if batched else ()) + tuple(0 if d == FREE else d for d in state.shape)
    if state.datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=numpy_dtype(state.datatype))


def sequence_parameters(model: str, parameters: Mapping[str, Any] | None) -> tuple[SequenceId, bool, bool]:
    """The request's ``sequence_id``, ``sequence_start`` and ``sequence_end``; INVALID_ARGUMENT when they are
    missing (an id of 0 or "" is none, as in Triton) or not of their types."""
    given = parameters or {}
    sequence_id = given.get("sequence_id")
    if sequence_id is None or sequence_id == 0 or sequence_id == "":
        raise invalid(f"inference request to model {model!r} must specify a non-zero or non-empty correlation ID: "
                      "it is a sequence model, so each request needs the sequence_id parameter (an unsigned "
                      "integer or a string) and sequence_start on the first request of a sequence")
    kind = type(sequence_id)
    if kind is not str and (kind is not int or not 0 < sequence_id < _UINT64_LIMIT):
        raise invalid(f"sequence_id must be an unsigned 64-bit integer or a string, got {sequence_id!r}")
    flags = []
    for key in ("sequence_start", "sequence_end"):
        flag = given.get(key, False)
        if not isinstance(flag, bool):
            raise invalid(f"{key} must be true or false, got {flag!r}")
        flags.append(flag)
    return sequence_id, flags[0], flags[1]


@dataclass(slots=True, eq=False)
class _Request:
    arrays: Arrays
    rows: int
    waiter: Waiter
    start: bool
    end: bool
    priority: object
    deadline_ns: int
    """When the request stops waiting (0: never)."""
    is_disconnected: Callable[[], bool] | None


@dataclass(slots=True, eq=False)
class _Sequence:
    id: SequenceId
    corrid: Arrays
    queue: deque[_Request] = field(default_factory=deque)
    state: Arrays | None = None
    running: bool = False
    slotted: bool = False
    """Holds one of the model's slots (``max_candidate_sequences``); else it waits in the backlog for one."""
    ending: bool = False
    """A request with sequence_end is queued or running: only a new start may follow it."""
    idle_since: float = 0.0
    """When its last request was answered, with none queued (``time.monotonic``)."""


class SequenceBatcher:
    """The live sequences of one model version, in front of its scheduler."""

    def __init__(self, name: str, plan: SequencePlan, scheduler: Scheduler) -> None:
        self.name = name
        self.plan = plan
        self.scheduler = scheduler
        self._live: dict[SequenceId, _Sequence] = {}
        self._released: OrderedDict[SequenceId, None] = OrderedDict()
        self._backlog: deque[_Sequence] = deque()
        """Started sequences waiting for a slot, oldest first (Triton's backlog)."""
        self._slotted = 0
        self._queued = 0
        """Requests waiting in the sequences' own queues (the scheduler's queue holds those handed over)."""
        self._idle_s = plan.config.max_sequence_idle_microseconds / 1e6
        self._idle: OrderedDict[SequenceId, _Sequence] = OrderedDict()
        """The live sequences with nothing to run, the longest idle first: one timer sweeps them, not one each."""
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def live(self) -> int:
        return len(self._live)

    def submit(self, arrays: Arrays, rows: int, waiter: Waiter, parameters: Mapping[str, Any] | None,
               priority: object = None, timeout_us: int | None = None,
               is_disconnected: Callable[[], bool] | None = None) -> None:
        """Queue one request on its sequence; ``waiter`` is told the result or the error (maybe before this
        returns: a refusal always is)."""
        try:
            sequence_id, start, end = sequence_parameters(self.name, parameters)
            if rows != 1 and self.plan.signature.batched:
                raise invalid(f"a request to sequence model {self.name!r} carries one row (it is one step of one "
                              f"sequence), got {rows}")
            self._check_room()
            sequence = self._sequence(sequence_id, start)
        except InferError as exc:
            waiter.set_exception(exc)
            return
        timeout = timeout_us or self.scheduler.policy.default_timeout_us
        deadline = perf_counter_ns() + timeout * 1000 if timeout else 0
        sequence.queue.append(_Request(arrays, rows, waiter, start, end, priority, deadline, is_disconnected))
        self._queued += 1
        if end or start:
            sequence.ending = end
        if self._idle:
            self._idle.pop(sequence_id, None)
        if sequence.slotted and not sequence.running:
            self._next(sequence)

    def _check_room(self) -> None:
        waiting = self._queued + self.scheduler.queued
        if waiting >= self.scheduler.policy.max_queue_size:
            raise InferError(ErrorCode.UNAVAILABLE, f"model {self.name!r} queue is full ({waiting} requests "
                             "waiting); retry in about 1 s", retry_after_s=1)

    def _sequence(self, sequence_id: SequenceId, start: bool) -> _Sequence:
        """The live sequence a request belongs to: a start opens one (or restarts a live one, as Triton does)."""
        sequence = self._live.get(sequence_id)
        if start:
            if sequence is not None:
                return sequence
            sequence = self._live[sequence_id] = _Sequence(sequence_id, self._corrid(sequence_id))
            self._released.pop(sequence_id, None)
            if self._slotted < self.plan.candidates:
                sequence.slotted = True
                self._slotted += 1
            else:
                self._backlog.append(sequence)
            return sequence
        if sequence_id in self._released:
            raise invalid(f"sequence {sequence_id!r} of model {self.name!r} was released after "
                          f"{self.plan.config.max_sequence_idle_microseconds} µs without a request "
                          "(max_sequence_idle_microseconds); start it again with sequence_start")
        if sequence is None or sequence.ending:
            now = "has ended" if sequence is not None else "is not live"
            raise invalid(f"inference request for sequence {sequence_id!r} to model {self.name!r} must specify the "
                          f"START flag on the first request of the sequence: sequence {sequence_id!r} {now}")
        return sequence

    def _corrid(self, sequence_id: SequenceId) -> Arrays:
        """The CORRID control tensors of a sequence, in their configured datatypes."""
        found: Arrays = {}
        for control, spec in self.plan.corrid:
            shape = _shape(spec, self.plan.signature.batched)
            if control.datatype == "BYTES":
                found[control.name] = np.full(shape, str(sequence_id).encode(), dtype=object)
                continue
            low, high = _INT_LIMITS[str(control.datatype)]
            if not isinstance(sequence_id, int) or not low <= sequence_id < high:
                raise invalid(f"model {self.name!r} takes its sequence id as {control.datatype} "
                              f"(control {control.name!r}): sequence_id must be such an integer, got {sequence_id!r}")
            found[control.name] = np.full(shape, sequence_id, dtype=numpy_dtype(str(control.datatype)))
        return found

    def _next(self, sequence: _Sequence) -> None:
        """Hand the sequence's next request to the scheduler; with none left, end or idle the sequence."""
        request = self._take(sequence)
        if request is None:
            if sequence.ending:
                self._drop(sequence)
            else:
                self._went_idle(sequence)
            return
        if request.start:
            sequence.state = None
        inputs = {**request.arrays, **self.plan.controls[(request.start, request.end)], **sequence.corrid,
                  **(sequence.state or self.plan.initial_state)}
        left_us = (request.deadline_ns - perf_counter_ns()) // 1000 if request.deadline_ns else 0
        sequence.running = True
        self.scheduler.submit(inputs, request.rows, _SequenceWaiter(self, sequence, request), request.priority,
                              max(1, left_us) if request.deadline_ns else None, request.is_disconnected)

    def _take(self, sequence: _Sequence) -> _Request | None:
        """The sequence's next request whose caller still waits; those gone or past their deadline are answered."""
        now = 0
        while sequence.queue:
            request = sequence.queue.popleft()
            self._queued -= 1
            if request.waiter.done():
                continue
            if request.is_disconnected is not None and request.is_disconnected():
                request.waiter.set_exception(unavailable("the client went away before the request ran"))
                continue
            now = now or perf_counter_ns()
            if request.deadline_ns and now >= request.deadline_ns:
                request.waiter.set_exception(InferError(
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"request to model {self.name!r} timed out waiting for the requests before it in sequence "
                    f"{sequence.id!r}"))
                continue
            return request
        return None

    def finished(self, sequence: _Sequence, outputs: RunResult | None) -> None:
        """A request of the sequence was answered (``outputs``: its result, None when it failed): keep the state it
        gave, and go on with the sequence's next request, on the next turn of the event loop (not deeper into a
        stack that may be the scheduler's)."""
        if outputs is not None and self.plan.states:
            sequence.state = {s.input_name: np.array(outputs.output(s.output_name)) for s in self.plan.states}
        sequence.running = False
        if self._live.get(sequence.id) is not sequence:
            return  # the batcher was closed
        if sequence.queue:
            asyncio.get_running_loop().call_soon(self._resume, sequence)
        else:
            self._next(sequence)

    def _resume(self, sequence: _Sequence) -> None:
        if not sequence.running and self._live.get(sequence.id) is sequence:
            self._next(sequence)

    def _went_idle(self, sequence: _Sequence) -> None:
        sequence.idle_since = monotonic()
        self._idle[sequence.id] = sequence
        self._idle.move_to_end(sequence.id)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._idle_s, self._release_idle)

    def _release_idle(self) -> None:
        """Release the sequences idle for max_sequence_idle_microseconds; wake again for the next one due."""
        self._sweep = None
        now = monotonic()
        while self._idle:
            sequence = next(iter(self._idle.values()))
            due = sequence.idle_since + self._idle_s
            if due > now:
                self._sweep = asyncio.get_running_loop().call_later(due - now, self._release_idle)
                return
            del self._idle[sequence.id]
            if sequence.running or sequence.queue or self._live.get(sequence.id) is not sequence:
                continue
            self._drop(sequence)
            self._released[sequence.id] = None
            while len(self._released) > _REMEMBERED:
                self._released.popitem(last=False)

    def _drop(self, sequence: _Sequence) -> None:
        """A sequence ended or was released: its slot goes to the oldest sequence of the backlog."""
        if self._live.get(sequence.id) is sequence:
            del self._live[sequence.id]
        if not sequence.slotted:
            return
        sequence.slotted = False
        self._slotted -= 1
        while self._backlog and self._slotted < self.plan.candidates:
            waiting = self._backlog.popleft()
            if self._live.get(waiting.id) is waiting:
                waiting.slotted = True
                self._slotted += 1
                self._next(waiting)

    def close(self) -> None:
        """Unloading: every request still waiting in a sequence's queue fails, every sequence is dropped."""
        gone = InferError(ErrorCode.UNAVAILABLE, f"model {self.name!r} was unloaded")
        for sequence in self._live.values():
            for request in sequence.queue:
                if not request.waiter.done():
                    request.waiter.set_exception(gone)
            sequence.queue.clear()
        if self._sweep is not None:
            self._sweep.cancel()
        self._live.clear()
        self._idle.clear()
        self._backlog.clear()
        self._slotted = 0
        self._queued = 0


class _SequenceWaiter:
    """What the scheduler answers for one request of a sequence: the sequence goes on, then the caller is told."""

    __slots__ = ("_batcher", "_done", "_request", "_sequence")

    def __init__(self, batcher: SequenceBatcher, sequence: _Sequence, request: _Request) -> None:
        self._batcher = batcher
        self._sequence = sequence
        self._request = request
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: RunResult) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._request.waiter.set_result(result)
        finally:
            self._batcher.finished(self._sequence, result)

    def set_exception(self, error: BaseException) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._request.waiter.set_exception(error)
        finally:
            self._batcher.finished(self._sequence, None)
