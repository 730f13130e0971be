"""Timing one model's predict function: latency at batch 1 and throughput at batch 64, in the same run.

This times the runtime alone (no server, no queue): the cost the model adds to every request. What a served
model answers under load is ``inferd bench``'s to say.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Predict = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 64


@dataclass(frozen=True, slots=True)
class Speed:
    latency_p50_us: float
    latency_p99_us: float
    """At batch 1: one row per call, rows taken in turn from the data."""
    throughput_rows_s: float
    """At batch 64: rows per second over repeated calls on 64 rows."""
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows(inputs: Mapping[str, np.ndarray], start: int, count: int) -> dict[str, np.ndarray]:
    """``count`` rows from ``start`` (wrapping around the data)."""
    total = len(next(iter(inputs.values())))
    index = np.arange(start, start + count) % total
    return {name: array[index] for name, array in inputs.items()}


def measure(predict: Predict, inputs: Mapping[str, np.ndarray], seconds: float = 0.5,
            min_calls: int = 20) -> Speed:
    """Run ``predict`` at batch 1 then batch 64, each for about ``seconds`` (and at least ``min_calls`` calls),
    after one warm-up call of each."""
    total = len(next(iter(inputs.values())))
    singles = [rows(inputs, i, LATENCY_BATCH) for i in range(min(total, 256))]
    block = rows(inputs, 0, THROUGHPUT_BATCH)
    predict(singles[0])
    predict(block)
    latencies: list[int] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < min_calls or time.perf_counter() < deadline:
        feed = singles[len(latencies) % len(singles)]
        started = time.perf_counter_ns()
        predict(feed)
        latencies.append(time.perf_counter_ns() - started)
    calls = 0
    started_s = time.perf_counter()
    while calls < min_calls or time.perf_counter() - started_s < seconds:
        predict(block)
        calls += 1
    elapsed = time.perf_counter() - started_s
    values = np.asarray(latencies, dtype=np.float64) / 1e3
    return Speed(float(np.percentile(values, 50)), float(np.percentile(values, 99)),
                 calls * THROUGHPUT_BATCH / elapsed, len(latencies) + calls)
