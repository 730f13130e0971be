"""Shadow traffic: sampled copies of live requests run on a shadow variant, off the caller's path.

After the caller has its answer, the request's arrays and the live outputs go on a bounded queue (full: the copy
is dropped and counted); one task drains it, runs each copy through the same DataPlane (an :class:`ArrayCall`
on the shadow's model) and compares the outputs with the live ones: per row, whether the argmax agrees
(classifier scores, or equal labels), and the mean absolute difference (regressors). A shadow that fails is
counted; the caller never sees it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.calls import GeneralPrepared, Routing
from inferd.endpoints.model import Variant
from inferd.endpoints.stats import VariantStats
from inferd.errors import invalid

if TYPE_CHECKING:
    from inferd.dataplane import DataPlane
    from inferd.loading import Loaded
    from inferd.scheduling.scheduler import RunResult
    from inferd.signature import Signature

log = logging.getLogger(__name__)


class ArrayCall:
    """A request that is already arrays (a shadow copy): answered with the model's outputs as arrays."""

    __slots__ = ("arrays", "model_name", "model_version", "routing", "rows")

    def __init__(self, variant: Variant, arrays: dict[str, np.ndarray], rows: int) -> None:
        self.model_name = variant.model
        self.model_version = None if variant.version is None else str(variant.version)
        self.arrays = arrays
        self.rows = rows
        self.routing: Routing | None = None

    def route(self) -> Routing:
        return Routing()

    def prepare(self, loaded: Loaded, max_elements: int) -> GeneralPrepared:
        names = set(loaded.signature.input_names())
        if set(self.arrays) != names:
            raise invalid(f"the shadow model takes inputs {sorted(names)}, the live request has {sorted(self.arrays)}")
        return GeneralPrepared(self.arrays, self.rows, loaded.signature.output_name_tuple)

    def respond(self, version: str, signature: Signature, prepared: Any, result: RunResult) -> dict[str, np.ndarray]:
        return {name: result.output(name) for name in signature.output_name_tuple}


@dataclass(slots=True)
class Copy:
    variant: Variant
    stats: VariantStats
    arrays: dict[str, np.ndarray]
    rows: int
    live: dict[str, np.ndarray]


class ShadowRunner:
    """The bounded queue of shadow copies and the task that runs them, one at a time."""

    def __init__(self, dataplane: DataPlane, capacity: int = 256) -> None:
        self._dataplane = dataplane
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(capacity)
        self._task: asyncio.Task[None] | None = None

    def offer(self, copy: Copy) -> None:
        """Queue a copy, or drop it (counted) when the queue is full. Never blocks, never raises."""
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            copy.stats.shadow_dropped += 1
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="inferd-shadow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _drain(self) -> None:
        while True:
            copy = await self._queue.get()
            started = perf_counter_ns()
            try:
                outputs = await self._dataplane.infer(ArrayCall(copy.variant, copy.arrays, copy.rows))
            except Exception as exc:  # a shadow's failure is its own
                copy.stats.record(perf_counter_ns() - started, False)
                log.debug("shadow variant %s failed: %s", copy.variant.name, exc)
                continue
            copy.stats.record(perf_counter_ns() - started, True)
            compare(copy.stats, copy.live, outputs)


def compare(stats: VariantStats, live: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> None:
    """Count how far a shadow's outputs are from the live ones (the outputs both have, of the same shape)."""
    rows = agreed = 0
    diffs = []
    for name, expected in live.items():
        got = shadow.get(name)
        if got is None or got.shape != expected.shape:
            continue
        if expected.dtype.kind in "fiu" and got.dtype.kind in "fiu":
            diffs.append(float(np.mean(np.abs(expected.astype(np.float64) - got.astype(np.float64)))))
        if expected.ndim >= 2 and expected.shape[-1] > 1 and expected.dtype.kind in "fiu":
            same = np.argmax(expected, axis=-1) == np.argmax(got, axis=-1)
        elif expected.dtype.kind not in "f":
            same = (expected == got).reshape(expected.shape[0], -1).all(axis=1) if expected.ndim else expected == got
        else:
            continue
        rows += int(np.size(same))
        agreed += int(np.count_nonzero(same))
    stats.compared += 1
    stats.rows_compared += rows
    stats.agreed += agreed
    if diffs:
        stats.abs_diff_sum += sum(diffs) / len(diffs)
