"""One scheduler per loaded model version: a bounded priority queue in front of the model's instances,
with dynamic batching, deadlines and cancellation.

Requests are validated before they get here, so a bad request fails alone and never joins a batch. What the
model returns is checked once per call (``check_outputs``), before a batch's result is split among its
callers. Requests whose non-batch dimensions or datatypes differ are never stacked together. A batch that
fails fails every caller in it. A request whose caller went away (client disconnect, gRPC cancel) is dropped
before it runs; one whose deadline passes while it waits is answered DEADLINE_EXCEEDED and never runs.

No task is created per request. A request that finds a free instance runs at once, before
:meth:`Scheduler.submit` returns; one that has to wait is queued with its :class:`Waiter` (an object told its
result, or an asyncio future), so that a caller needs no coroutine at all. When an instance frees up, the scheduler
runs the next batch itself: at once when the executor runs it inline on the event loop, else on one task per batch,
and answers each caller with its rows.

Dynamic batching with no queue delay (``max_queue_delay_us = 0``, as Triton's ``dynamic_batching { }``)
does not wait for time to pass: the requests that arrive in one turn of the event loop (every connection
that had a request ready when the loop polled) are stacked into one batch at the end of that turn. A model
that runs inline on the event loop (see :mod:`inferd.executors.threads`) is never busy when a request
arrives, so without this its batches would always hold one request. When turn after turn gathers a single
request (one client, or a quiet server), requests run at once without the turn's detour, and one in
``_PROBE_EVERY`` still takes it, to notice when traffic picks up.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Protocol

import numpy as np

from inferd.errors import ErrorCode, InferError, internal
from inferd.executors.base import Executor, StreamingExecutor
from inferd.runtimes.base import ResponseSender
from inferd.scheduling.policy import SchedulingPolicy

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
OutputCheck = Callable[[Mapping[str, np.ndarray], int], Mapping[str, np.ndarray]]
"""Checks what one model call returned for a batch of so many rows and gives the arrays to answer with (raises
INTERNAL when the model broke its signature)."""

_TIMER_RESOLUTION_S = 0.001
"""How late an event-loop timer may fire: epoll and libuv wait in whole milliseconds."""

_SOLO_TURNS = 8
"""Turns in a row that gathered a single request, after which zero-delay batching runs requests at once."""
_PROBE_EVERY = 32
"""While running requests at once, one in this many still waits for the end of its turn (a probe): when it
is joined by others, batching resumes."""


@dataclass(slots=True)
class RunResult:
    batch_outputs: Mapping[str, np.ndarray]
    """What the model call returned (checked), for the whole batch the request ran in."""
    queue_ns: int
    infer_ns: int
    batch_rows: int
    """Rows of the batch the request ran in (its own rows when it ran alone)."""
    ran_batch: bool = True
    """Whether this request counts the batch's model call (one request of each batch does: the first answered)."""
    start: int = 0
    stop: int = -1
    """The request's rows of the batch are ``start:stop``; -1: all of them (it ran alone). Each caller slices the
    outputs it answers with, and only those."""
    listed: dict[str, list[Any]] | None = None
    """The batch's outputs as lists, made once for all of its callers as the first asks (see :meth:`elements`);
    None when it ran alone."""

    def output(self, name: str) -> np.ndarray:
        """This request's rows of one output."""
        array = self.batch_outputs[name]
        return array if self.stop < 0 else array[self.start:self.stop]

    def elements(self, name: str) -> tuple[list[int], list[Any]]:
        """This request's rows of one output as JSON has them: the shape, and the elements in one flat list. In a
        batch whose output has one or two dimensions and a row per caller (what batching the requests of one
        turn gives), the rows are cut from one ``tolist()`` of the batch's output: one numpy call per batch
        instead of three per caller."""
        array = self.batch_outputs[name]
        listed = self.listed
        if listed is not None and (array.ndim == 1 or (array.ndim == 2 and self.stop - self.start == 1)):
            rows = listed.get(name)
            if rows is None:
                rows = listed[name] = array.tolist()
            if array.ndim == 1:
                return [self.stop - self.start], rows[self.start:self.stop]
            return [1, array.shape[1]], rows[self.start]
        part = self.output(name)
        return list(part.shape), part.ravel().tolist()

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """This request's rows of every output."""
        return {name: self.output(name) for name in self.batch_outputs}


class Waiter(Protocol):
    """What a request submitted with :meth:`Scheduler.submit` waits with: told its result or its error once, as soon
    as there is one. An asyncio future is one; the DataPlane's own needs no coroutine to resume and no loop turn."""

    def done(self) -> bool:
        """Answered already (or its caller gave up): it must not run."""
        ...

    def set_result(self, result: RunResult) -> None: ...

    def set_exception(self, error: BaseException) -> None: ...


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    key: tuple[object, ...]
    enqueued_ns: int
    future: asyncio.Future[RunResult] | Waiter
    """Resolved with the request's RunResult, or failed."""
    is_disconnected: Callable[[], bool] | None = None
    timer: asyncio.TimerHandle | None = field(default=None)
    sender: ResponseSender | None = None
    """A decoupled model's request: where its responses go (it always runs alone)."""

    def gone(self) -> bool:
        """Finished (cancelled, expired) or its caller went away: it must not run."""
        if self.future.done():
            return True
        if self.is_disconnected is not None and self.is_disconnected():
            self.future.set_exception(InferError(ErrorCode.UNAVAILABLE, "the client went away before the request ran"))
            return True
        return False


class Scheduler:
    def __init__(self, name: str, executor: Executor, policy: SchedulingPolicy,
                 check_outputs: OutputCheck | None = None) -> None:
        self.name = name
        self.executor = executor
        self.policy = policy
        self._check = check_outputs
        self._levels: list[deque[_Pending]] = [deque() for _ in range(policy.priority_levels)]
        self._queued = 0
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._per_row_ns = 100_000.0  # moving average of run time per row, for Retry-After
        self._default_level = policy.priority_level(None)
        self._per_turn = policy.dynamic_batching and not policy.max_queue_delay_us
        """Zero-delay batching: a batch is what arrived in one turn of the event loop."""
        self._turn_armed = False
        self._solo_turns = 0
        self._alone_runs = 0
        self._dispatching = False
        """Within :meth:`_dispatch`: a batch it runs inline asks for the next one by returning, not recursing."""
        self._running: set[asyncio.Task[None]] = set()
        """Batches running on tasks (executors that do not run them inline)."""

    @property
    def queued(self) -> int:
        return self._queued

    def _runs_now(self) -> bool:
        """Whether a new request runs at once: a free instance, nobody waiting, and no batch to gather."""
        if self._queued or self._busy >= self.executor.instances:
            return False
        return not self.policy.dynamic_batching or (self._per_turn and self._alone())

    def _alone(self) -> bool:
        """Zero-delay batching, free instance, empty queue: whether this request runs at once (recent turns
        gathered one request each) rather than at the end of its turn."""
        if self._solo_turns < _SOLO_TURNS:
            return False
        self._alone_runs += 1
        return self._alone_runs % _PROBE_EVERY != 0

    def _end_of_turn(self) -> None:
        """Every request that arrived in this turn of the event loop is queued: batch them."""
        self._turn_armed = False
        self._solo_turns = self._solo_turns + 1 if self._queued <= 1 else 0
        self._dispatch(delay_over=True)

    def _queued_now(self) -> None:
        """A request was queued: gather it with this turn's (zero-delay batching), or see what can run."""
        if self._per_turn:
            if not self._turn_armed:
                self._turn_armed = True
                asyncio.get_running_loop().call_soon(self._end_of_turn)
        else:
            self._dispatch()

    def submit(self, inputs: Arrays, rows: int, waiter: Waiter, priority: object = None,  # noqa: PLR0913, PLR0917
               timeout_us: int | None = None, is_disconnected: Callable[[], bool] | None = None,
               key: tuple[object, ...] | None = None, sender: ResponseSender | None = None) -> None:
        """Run one request's (validated) inputs; ``rows`` is its batch size (1 for an unbatched model). ``waiter``
        (an asyncio future will do) is told the result or the error, maybe before this returns (a refusal always
        is: the queue is full, or the priority is not one of the model's levels). ``is_disconnected`` tells
        whether the caller has gone away; a request still queued is then dropped. ``key``, when the caller knows
        it, is what :func:`batch_key` would make of ``inputs``. ``sender``: a decoupled model's request, whose
        responses go there as the model makes them; its result then only says the model has finished."""
        try:
            level = self._default_level if priority is None else self.policy.priority_level(priority)
            if not self._queued and self._runs_now():  # a busy turn's requests skip the call
                self._busy += 1
                self._run([_Pending(inputs, rows, (), perf_counter_ns(), waiter, sender=sender)])
                return
            queued = self._enqueue(inputs, rows, level, timeout_us or self.policy.default_timeout_us,
                                   is_disconnected, key, waiter)
            queued.sender = sender
        except InferError as exc:
            _settle(_Pending(inputs, rows, (), 0, waiter), exc)
            return
        self._queued_now()

    def _enqueue(self, inputs: Arrays, rows: int, level: int, timeout_us: int,
                 is_disconnected: Callable[[], bool] | None, key: tuple[object, ...] | None,
                 future: asyncio.Future[RunResult] | Waiter) -> _Pending:
        if self._queued >= self.policy.max_queue_size:
            self._purge()
        if self._queued >= self.policy.max_queue_size:
            retry = max(1, math.ceil(self._queued * self._per_row_ns / max(1, self.executor.instances) / 1e9))
            raise InferError(
                ErrorCode.UNAVAILABLE,
                f"model {self.name!r} queue is full ({self._queued} requests waiting); retry in about {retry} s",
                retry_after_s=retry,
            )
        pending = _Pending(inputs, rows, batch_key(inputs) if key is None else key, perf_counter_ns(), future,
                           is_disconnected)
        if timeout_us:
            pending.timer = asyncio.get_running_loop().call_later(timeout_us / 1e6, self._expire, pending, timeout_us)
        self._levels[level].append(pending)
        self._queued += 1
        return pending

    def _expire(self, pending: _Pending, timeout_us: int) -> None:
        if not pending.future.done():  # still waiting: it never runs
            pending.future.set_exception(InferError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"request to model {self.name!r} timed out after {timeout_us} µs waiting in the queue",
            ))

    def _release(self, rows: int, elapsed_ns: int) -> None:
        """A model call finished: its instance is free for whatever waits."""
        self._busy -= 1
        self._per_row_ns = 0.9 * self._per_row_ns + 0.1 * elapsed_ns / max(1, rows)
        if self._queued:
            self._dispatch()

    def _run(self, batch: list[_Pending]) -> None:
        """Run a batch on the instance taken for it and answer its callers: now when the executor runs it inline,
        else on a task."""
        inputs = batch[0].inputs if len(batch) == 1 else _stack([p.inputs for p in batch])
        rows = sum(p.rows for p in batch)
        if batch[0].sender is not None:  # decoupled models never batch (see ModelConfig)
            task = asyncio.get_running_loop().create_task(self._run_streamed(batch[0], batch[0].sender))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            return
        if not self.executor.inline(rows):
            task = asyncio.get_running_loop().create_task(self._run_later(batch, inputs, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            return
        started = perf_counter_ns()
        try:
            outputs = self.executor.run_inline(inputs, rows)
        except Exception as exc:
            _fail(batch, exc)
            return
        finally:
            self._release(rows, perf_counter_ns() - started)
        self._answer(batch, outputs, rows, started)

    async def _run_later(self, batch: list[_Pending], inputs: Arrays, rows: int) -> None:
        started = perf_counter_ns()
        try:
            outputs = await self.executor.run(inputs)
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._release(rows, perf_counter_ns() - started)
        self._answer(batch, outputs, rows, started)

    async def _run_streamed(self, item: _Pending, sender: ResponseSender) -> None:
        """A decoupled model's request: its responses went to its sender; its result says the model finished."""
        started = perf_counter_ns()
        try:
            if not isinstance(self.executor, StreamingExecutor):
                raise internal(f"model {self.name!r} is decoupled, and its instances cannot stream responses")
            await self.executor.stream(item.inputs, sender)
        except BaseException as exc:
            _fail([item], exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._release(item.rows, perf_counter_ns() - started)
        if not item.future.done():
            _settle(item, RunResult({}, started - item.enqueued_ns, perf_counter_ns() - started, item.rows))

    def _answer(self, batch: list[_Pending], outputs: Mapping[str, np.ndarray], rows: int, started: int) -> None:
        """Check what the model returned and give each caller still waiting its rows."""
        finished = perf_counter_ns()
        try:
            if self._check is not None:
                outputs = self._check(outputs, rows)
            if len(batch) > 1:
                self._check_rows(outputs, rows)
        except InferError as exc:
            _fail(batch, exc)
            return
        if len(batch) == 1:
            item = batch[0]
            if not item.future.done():
                _settle(item, RunResult(outputs, started - item.enqueued_ns, finished - started, rows))
            return
        counted = False
        start = 0
        listed: dict[str, list[Any]] = {}
        for item in batch:
            stop = start + item.rows
            if not item.future.done():
                _settle(item, RunResult(outputs, started - item.enqueued_ns, finished - started, rows, not counted,
                                        start, stop, listed))
                counted = True
            start = stop

    def _check_rows(self, outputs: Mapping[str, np.ndarray], rows: int) -> None:
        """Every output must have a row per row of the batch, or no caller can be given its own."""
        for name, array in outputs.items():
            if np.ndim(array) == 0 or len(array) != rows:
                raise internal(f"model {self.name!r} returned {np.shape(array)[:1] or 'no'} rows of {name!r} "
                               f"for a batch of {rows}")

    # -- choosing what runs next ----------------------------------------------------------------------
    def _dispatch(self, delay_over: bool = False) -> None:
        """Run what should run next on the free instances. ``delay_over``: the batching timer fired, so the head
        has waited its max_queue_delay (timers may fire a little early: trust them)."""
        if self._dispatching:
            return  # called from a batch this dispatch runs inline: the loop below goes on when it returns
        self._dispatching = True
        try:
            while self._busy < self.executor.instances:
                self._purge_heads()
                if not self._queued:
                    return
                batch = self._take_batch(delay_over)
                delay_over = False
                if batch is None:
                    return
                self._busy += 1
                self._run(batch)
        finally:
            self._dispatching = False

    def _purge_heads(self) -> None:
        for level in self._levels:
            while level and level[0].gone():
                level.popleft()
                self._queued -= 1

    def _purge(self) -> None:
        for index, level in enumerate(self._levels):
            kept = deque(p for p in level if not p.gone())
            self._queued -= len(level) - len(kept)
            self._levels[index] = kept

    def _take_batch(self, delay_over: bool = False) -> list[_Pending] | None:
        head = next(level[0] for level in self._levels if level)
        if not self.policy.dynamic_batching:
            self._remove([head])
            return [head]
        chosen, rows = self._compatible(head)
        if not delay_over and not self._should_dispatch(head, chosen, rows):
            self._arm_timer(head)
            return None
        self._remove(chosen)
        return chosen

    def _compatible(self, head: _Pending) -> tuple[list[_Pending], int]:
        chosen: list[_Pending] = []
        rows = 0
        limit = max(self.policy.max_batch_size, head.rows)
        for level in self._levels:
            for item in level:
                if item.key != head.key or item.future.done() or (
                        item.is_disconnected is not None and item.is_disconnected() and item.gone()):
                    continue  # gone(), called only when its caller left, fails it
                if rows + item.rows > limit:
                    return chosen, rows
                chosen.append(item)
                rows += item.rows
        return chosen, rows

    def _should_dispatch(self, head: _Pending, chosen: list[_Pending], rows: int) -> bool:
        if rows >= self.policy.max_batch_size:
            return True
        if len(chosen) == self._queued and rows in self.policy.preferred_batch_sizes:
            return True  # a preferred size, and nothing else waiting that could make it bigger
        waited_us = (perf_counter_ns() - head.enqueued_ns) / 1000
        return waited_us >= self.policy.max_queue_delay_us

    def _arm_timer(self, head: _Pending) -> None:
        """Wake up when the head's max_queue_delay is over. Event loops time out in whole milliseconds
        (epoll), so a timer fires up to 1 ms late; it is set one resolution early and, when it fires with less
        than that left, the batch goes at once: a request waits at most its max_queue_delay, not more."""
        if self._timer is not None:
            return
        remaining = self.policy.max_queue_delay_us / 1e6 - (perf_counter_ns() - head.enqueued_ns) / 1e9

        def fire() -> None:
            self._timer = None
            self._purge_heads()
            if not self._queued:
                return
            first = next(level[0] for level in self._levels if level)
            left = self.policy.max_queue_delay_us / 1e6 - (perf_counter_ns() - first.enqueued_ns) / 1e9
            if left > _TIMER_RESOLUTION_S:
                self._timer = asyncio.get_running_loop().call_later(left - _TIMER_RESOLUTION_S, fire)
            else:
                self._dispatch(delay_over=True)

        self._timer = asyncio.get_running_loop().call_later(max(0.0, remaining - _TIMER_RESOLUTION_S), fire)

    def _remove(self, chosen: list[_Pending]) -> None:
        if len(chosen) == self._queued:  # everything waiting (what a busy turn usually gathers)
            for level in self._levels:
                level.clear()
        elif len(chosen) == 1 and any(level and level[0] is chosen[0] for level in self._levels):
            next(level for level in self._levels if level and level[0] is chosen[0]).popleft()
        else:
            ids = {id(item) for item in chosen}
            for index, level in enumerate(self._levels):
                self._levels[index] = deque(item for item in level if id(item) not in ids)
        self._queued -= len(chosen)
        for item in chosen:
            if item.timer is not None:
                item.timer.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for level in self._levels:
            _fail(list(level), InferError(ErrorCode.UNAVAILABLE, f"model {self.name!r} was unloaded"))
            level.clear()
        self._queued = 0


def batch_key(inputs: Arrays) -> tuple[object, ...]:
    """Requests can share a batch only when everything but the batch dimension matches. (The order of the inputs
    counts too: requests that list them in another order are not merged, which costs a batch, never a result.)"""
    return tuple([(name, array.dtype, array.shape[1:]) for name, array in inputs.items()])


def _stack(parts: list[Arrays]) -> Arrays:
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def _settle(item: _Pending, result: RunResult | BaseException) -> None:
    """Answer one caller; a waiter that raises (its caller's bug) must not keep the rest of a batch from theirs."""
    try:
        if isinstance(result, RunResult):
            item.future.set_result(result)
        else:
            item.future.set_exception(result)
    except Exception:
        log.exception("answering a request to a model failed")


def _fail(batch: list[_Pending], error: BaseException) -> None:
    if isinstance(error, asyncio.CancelledError):
        error = InferError(ErrorCode.UNAVAILABLE, "the request that was running this batch was cancelled")
    for item in batch:
        if not item.future.done():
            _settle(item, error)
