"""In-process instances: the model runs in this process, on its own threads, or inline on the event loop
when it is fast enough that handing it to a thread would cost more than running it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns

import numpy as np

from inferd.errors import InferError, internal
from inferd.runtimes.base import Runtime

log = logging.getLogger(__name__)

INLINE_BELOW_NS = 500_000
"""Run inline on the event loop while a call's moving average stays under this. A hand-off to a thread and
back costs tens of microseconds of CPU; a 10 µs model pays that many times over. Slower models, or models that
hold the GIL for long, go to threads so the loop keeps accepting requests. Samples are capped at twice this,
so one slow call (a GC pause, a busy core) does not send a fast model to threads for long."""


class ThreadExecutor:
    def __init__(self, name: str, runtime: Runtime, instances: int = 1, inline_below_ns: int = INLINE_BELOW_NS) -> None:
        self.name = name
        self.runtime = runtime
        self.instances = instances
        self._inline_below_ns = inline_below_ns
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"inferd-{name}")
        self._average_ns = float(inline_below_ns)  # start on threads until the model shows it is fast

    @property
    def ready(self) -> bool:
        return True

    async def run(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self._average_ns < self._inline_below_ns:
            return self._timed(inputs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, inputs)

    def _timed(self, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        started = perf_counter_ns()
        try:
            return self.runtime.predict(inputs)
        except InferError:
            raise
        except Exception as exc:  # the model's own failure: report it, keep serving
            log.warning("model %s raised %s: %s", self.name, type(exc).__name__, exc)
            raise internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sample = min(perf_counter_ns() - started, 2 * self._inline_below_ns)
            self._average_ns = 0.9 * self._average_ns + 0.1 * sample

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.runtime.close()
