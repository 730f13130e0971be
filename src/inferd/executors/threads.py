"""In-process instances: the model runs in this process, on its own threads, or inline on the event loop
when it is fast enough that handing it to a thread would cost more than running it.

Inline is only for runtimes whose cost is predictable from the input size (they declare ``inline_safe``:
compiled graphs and trees, not user Python code or torch modules), and only for calls expected to take under
``INLINE_BELOW_NS`` from the measured cost per row. Anything else runs on the model's threads, so a slow call
never stalls the event loop (health checks, other models, deadlines, disconnects).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from time import perf_counter_ns

import numpy as np

from inferd.errors import InferError, internal
from inferd.runtimes.base import Runtime

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
        self._inline_below_ns = inline_below_ns
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"inferd-{name}")
        self._call_ns = float(inline_below_ns)  # fixed cost per call: start on threads until measured
        self._row_ns = 0.0
        self._rows_seen = 0
        """Largest batch measured so far: a bigger one is not predicted, so it goes to a thread."""

    @property
    def ready(self) -> bool:
        return True

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        rows = _rows(inputs)
        if self._inline_ok and self._expected_ns(rows) < self._inline_below_ns:
            return self._timed(inputs, rows)
        # in the caller's context, so the model's log records carry the request id (run_in_executor copies none)
        return await asyncio.get_running_loop().run_in_executor(self._pool, copy_context().run, self._timed, inputs,
                                                                rows)

    def _expected_ns(self, rows: int) -> float:
        """How long a call with this many rows should take; unknown (infinite) for more rows than ever seen."""
        if rows > self._rows_seen:
            return float("inf")
        return self._call_ns + self._row_ns * rows

    def _timed(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        started = perf_counter_ns()
        try:
            return self.runtime.predict(inputs)
        except InferError:
            raise
        except Exception as exc:  # the model's own failure: report it, keep serving
            log.warning("model %s raised %s: %s", self.name, type(exc).__name__, exc)
            raise internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._learn(rows, perf_counter_ns() - started)

    def _learn(self, rows: int, elapsed_ns: int) -> None:
        """Split the cost into a per-call and a per-row part (moving averages), to predict the next call.

        One sample moves the estimate up by at most a factor of 1.3: on a busy machine a call is now and then
        descheduled for milliseconds, and counting that in full sent the next dozens of calls to a thread
        (a tenth of the CPU per request, measured). A model that really became slower still crosses the
        inline threshold within a few calls; a batch larger than any seen before is learned in full."""
        if rows <= self._rows_seen:  # a size already predicted: cap the outlier
            elapsed_ns = min(elapsed_ns, int(4 * (self._call_ns + self._row_ns * rows)) + 1_000)
        self._rows_seen = max(self._rows_seen, rows)
        if rows <= 1:
            self._call_ns = 0.9 * self._call_ns + 0.1 * elapsed_ns
        else:
            per_row = max(0.0, (elapsed_ns - self._call_ns) / rows)
            self._row_ns = 0.9 * self._row_ns + 0.1 * per_row

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.runtime.close()


def _rows(inputs: dict[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
