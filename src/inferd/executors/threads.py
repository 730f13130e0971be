"""In-process instances: the model runs in this process, on its own threads, or inline on the event loop
when it is fast enough that handing it to a thread would cost more than running it.

Inline is only for runtimes whose cost is predictable from the input size (they declare ``inline_safe``:
compiled graphs and trees, not user Python code or torch modules), and only for calls expected to take under
``INLINE_BELOW_NS`` from the measured cost of calls of their size. Anything else runs on the model's threads,
so a slow call never stalls the event loop (health checks, other models, deadlines, disconnects).

An execution timeout bounds what a caller waits for; a call past it cannot be stopped, so it keeps its thread
and the model refuses calls until it returns (see :class:`ThreadExecutor`). The threads are daemons
(:mod:`inferd.executors.daemon_threads`): such a call cannot keep the server from exiting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from bisect import bisect_left
from collections.abc import Mapping
from concurrent.futures import Future
from contextvars import copy_context
from time import perf_counter_ns
from typing import Any

import numpy as np

from inferd.errors import ErrorCode, InferError, internal, unavailable
from inferd.executors.daemon_threads import DaemonThreads
from inferd.runtimes.base import ResponseSender, Runtime, StreamingRuntime
from inferd.signature import as_declared

log = logging.getLogger(__name__)

INLINE_BELOW_NS = 300_000
"""Expected call time under which an inline-safe model runs on the event loop. A hand-off to a thread and
back costs tens of microseconds of CPU; a 10 µs model pays that many times over."""


class ThreadExecutor:
    """``instances`` threads running one in-process runtime, with an execution timeout (``timeout_s``, 0 for
    none).

    A thread cannot be stopped: a call past the timeout answers its callers DEADLINE_EXCEEDED and keeps its
    thread. Until it returns, the executor is not ready (``not_ready_reason`` says why) and refuses new calls
    with UNAVAILABLE, so that requests fail at once instead of piling up behind it. Nor can an inline call be
    preempted, so with a timeout a call runs inline only when its size has been measured at under a hundredth
    of the limit (and ``INLINE_BELOW_NS``), and never again once any call has run past it."""

    def __init__(self, name: str, runtime: Runtime, instances: int = 1,
                 inline_below_ns: int = INLINE_BELOW_NS, timeout_s: float = 0.0) -> None:
        self.name = name
        self.runtime = runtime
        self.instances = instances
        self.timeout_s = timeout_s
        self._timeout_ns = int(timeout_s * 1e9)
        self._inline_ok = bool(getattr(runtime, "inline_safe", False))
        self._columns = runtime.signature.column_inputs
        self._inline_below_ns = min(inline_below_ns, self._timeout_ns // 100) if timeout_s else inline_below_ns
        self._pool = DaemonThreads(instances, f"inferd-{name}")
        self._lock = threading.Lock()
        self._overrunning = 0
        self.not_ready_reason = ""
        """Why the executor refuses calls now (a call past its execution timeout), else empty."""
        self.cost = CallCost()
        """What calls of each size take: whether the next one may run inline."""

    @property
    def ready(self) -> bool:
        return not self._overrunning

    def inline(self, rows: int) -> bool:
        return self._inline_ok and self.cost.expected_ns(rows) < self._inline_below_ns

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        return self._timed(inputs, rows)

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self._overrunning:
            raise unavailable(self.not_ready_reason)
        rows = _rows(inputs)
        if self.inline(rows):
            return self._timed(inputs, rows)
        # in the caller's context, so the model's log records carry the request id
        future = self._pool.submit(copy_context().run, self._timed, inputs, rows)
        if not self.timeout_s:
            return await asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            self._overran(future)
            raise InferError(ErrorCode.DEADLINE_EXCEEDED,
                             f"model {self.name!r} did not answer within its execution timeout of "
                             f"{self.timeout_s:g} s") from None

    async def stream(self, inputs: dict[str, np.ndarray], sender: ResponseSender) -> None:
        """A decoupled model's request, on one of the model's threads. The execution timeout does not apply (a
        stream may rightly last long); the caller going away stops the model at its next response."""
        if self._overrunning:
            raise unavailable(self.not_ready_reason)
        runtime = self.runtime
        if not isinstance(runtime, StreamingRuntime):
            raise internal(f"model {self.name!r} is decoupled but its runtime cannot stream responses")
        await asyncio.wrap_future(self._pool.submit(copy_context().run, self._streamed, runtime, inputs, sender))

    def _streamed(self, runtime: StreamingRuntime, inputs: dict[str, np.ndarray], sender: ResponseSender) -> None:
        try:
            runtime.stream(as_declared(self._columns, inputs) if self._columns else inputs, sender)
        except InferError:
            raise
        except Exception as exc:  # the model's own failure: report it, keep serving
            log.warning("model %s raised %s: %s", self.name, type(exc).__name__, exc)
            raise internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc

    def _overran(self, future: Future[Any]) -> None:
        with self._lock:
            self._overrunning += 1
            self._inline_below_ns = 0
            self.not_ready_reason = (f"model {self.name!r} is not taking requests: a call has run past its "
                                     f"execution timeout of {self.timeout_s:g} s and has not returned")
        log.warning("%s", self.not_ready_reason)
        future.add_done_callback(self._returned)

    def _returned(self, _: Future[Any]) -> None:
        with self._lock:
            self._overrunning -= 1
            if not self._overrunning:
                self.not_ready_reason = ""
        log.warning("model %s: the call past its execution timeout has returned; taking requests again", self.name)

    def _timed(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        started = perf_counter_ns()
        try:
            return self.runtime.predict(as_declared(self._columns, inputs) if self._columns else inputs)
        except InferError:
            raise
        except Exception as exc:  # the model's own failure: report it, keep serving
            log.warning("model %s raised %s: %s", self.name, type(exc).__name__, exc)
            raise internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            elapsed = perf_counter_ns() - started
            self.cost.learn(rows, elapsed)
            if self._timeout_ns and elapsed > self._timeout_ns:
                self._inline_below_ns = 0  # a call of this model may take that long: never on the event loop

    def close(self) -> None:
        """Stop the threads, after the calls they run (up to the execution timeout for each). A call still
        running then is abandoned, and the runtime left open under it."""
        if self._pool.shutdown(self.timeout_s or None):
            self.runtime.close()
        else:
            log.warning("model %s: closed with a call still running past its execution timeout", self.name)


class CallCost:
    """How long a model call with a given number of rows takes, learned from the calls made: a moving
    average per batch size seen.

    A call is expected to take what the smallest size seen that is at least as large takes (more rows never
    make a call cheaper, so this errs on the long side), and an unknown time when it has more rows than any
    call seen. Splitting the cost into a part per call and a part per row would need calls of several sizes
    to tell them apart: under zero-delay batching a busy model may see nothing but full batches, and such a
    split never learned the cost of any call and kept them all off the event loop.

    Noise only ever adds time, so an average follows faster calls quickly and slower ones slowly: one sample
    moves it up by at most a factor of 1.3. On a busy machine a call is now and then descheduled for
    milliseconds (the first call of a size often is), and counting that in full sent the next dozens of calls
    to a thread (a tenth of the CPU per request, measured). A model that really became slower still crosses
    the inline threshold within about ten calls."""

    __slots__ = ("_ns", "_sizes")

    def __init__(self) -> None:
        self._ns: dict[int, float] = {}
        self._sizes: list[int] = []
        """The sizes in ``_ns``, in order."""

    def expected_ns(self, rows: int) -> float:
        index = bisect_left(self._sizes, rows)
        if index == len(self._sizes):
            return float("inf")
        return self._ns[self._sizes[index]]

    def learn(self, rows: int, elapsed_ns: int) -> None:
        known = self._ns.get(rows)
        if known is None:
            self._ns[rows] = float(elapsed_ns)
            self._sizes.insert(bisect_left(self._sizes, rows), rows)
            return
        if elapsed_ns < known:  # a faster call: the model's cost shows through less of the machine's noise
            self._ns[rows] = 0.5 * known + 0.5 * elapsed_ns
        else:
            self._ns[rows] = 0.9 * known + 0.1 * min(elapsed_ns, 4 * known + 1_000)


def _rows(inputs: dict[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
