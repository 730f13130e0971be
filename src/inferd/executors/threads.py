"""In-process instances: the model runs in this process, on its own threads, or inline on the event loop
when it is fast enough that handing it to a thread would cost more than running it.

Inline is only for runtimes whose cost is predictable from the input size (they declare ``inline_safe``:
compiled graphs and trees, not user Python code or torch modules), and only for calls expected to take under
``INLINE_BELOW_NS`` from the measured cost of calls of their size. Anything else runs on the model's threads,
so a slow call never stalls the event loop (health checks, other models, deadlines, disconnects).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from time import perf_counter_ns

import numpy as np

from inferd.errors import InferError, internal
from inferd.runtimes.base import Runtime
from inferd.signature import as_declared

log = logging.getLogger(__name__)

INLINE_BELOW_NS = 300_000
"""Expected call time under which an inline-safe model runs on the event loop. A hand-off to a thread and
back costs tens of microseconds of CPU; a 10 µs model pays that many times over."""


class ThreadExecutor:
    def __init__(self, name: str, runtime: Runtime, instances: int = 1,
                 inline_below_ns: int = INLINE_BELOW_NS) -> None:
        self.name = name
        self.runtime = runtime
        self.instances = instances
        self._inline_ok = bool(getattr(runtime, "inline_safe", False))
        self._columns = runtime.signature.column_inputs
        self._inline_below_ns = inline_below_ns
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"inferd-{name}")
        self.cost = CallCost()
        """What calls of each size take: whether the next one may run inline."""

    @property
    def ready(self) -> bool:
        return True

    def inline(self, rows: int) -> bool:
        return self._inline_ok and self.cost.expected_ns(rows) < self._inline_below_ns

    def run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        return self._timed(inputs, rows)

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        rows = _rows(inputs)
        if self.inline(rows):
            return self._timed(inputs, rows)
        # in the caller's context, so the model's log records carry the request id (run_in_executor copies none)
        return await asyncio.get_running_loop().run_in_executor(self._pool, copy_context().run, self._timed, inputs,
                                                                rows)

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
            self.cost.learn(rows, perf_counter_ns() - started)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.runtime.close()


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
