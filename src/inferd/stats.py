"""Per model-version inference statistics, in the shape Triton's statistics extension reports.

Counters are plain integers updated from the event loop and the model threads; a lost update under a race
would cost one count in a statistic, never a request, so there is no lock on the hot path.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

DURATION_BOUNDS_NS: tuple[int, ...] = tuple(
    int(s * 1e9) for s in (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0, 10.0)
)
"""Upper bounds (inclusive) of the duration histogram buckets, in ns; one more bucket counts the rest."""


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class HistogramDuration(Duration):
    """A :class:`Duration` that also counts each observation in its bucket of :data:`DURATION_BOUNDS_NS`: one
    bisect and one increment, so the Prometheus histograms cost nothing more at request time."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BOUNDS_NS) + 1))

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns
        self.buckets[bisect_left(DURATION_BOUNDS_NS, ns)] += 1


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)

    def add(self, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)


@dataclass(slots=True)
class ModelStats:
    """What one model version did: successes, failures and where the time went."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    """Inferences performed: a request with a batch of 8 rows counts 8."""
    execution_count: int = 0
    """Times the model ran."""
    success: HistogramDuration = field(default_factory=HistogramDuration)
    fail: Duration = field(default_factory=Duration)
    queue: HistogramDuration = field(default_factory=HistogramDuration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: HistogramDuration = field(default_factory=HistogramDuration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)
    fail_codes: dict[str, int] = field(default_factory=dict)
    """Failures by error code (``INVALID_ARGUMENT``, ``UNAVAILABLE``, ...)."""
    cache_hit: Duration = field(default_factory=Duration)
    """Requests answered from the response cache, and the time they took."""
    cache_miss: Duration = field(default_factory=Duration)
    """Requests the response cache did not hold, and the time the lookups took."""
    load_ns: int = 0
    """How long loading this version took: what a request that found it unloaded waits, beside its own run."""
    memory_bytes: int = 0
    """Memory the version holds: model.toml ``memory_size``, else the server's resident memory after its load
    less before (0 where that cannot be measured)."""

    def record_success(self, batch: int, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int,
                       output_ns: int, executed_rows: int | None) -> None:
        """One request answered. ``executed_rows`` is the size of the batch the model ran, given by the one
        request that ran it (None for requests that were merged into another's batch)."""
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += batch
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_infer.add(infer_ns)
        self.compute_input.add(input_ns)
        self.compute_output.add(output_ns)
        if executed_rows is None:
            return
        self.execution_count += 1
        per_batch = self.batches.get(executed_rows)
        if per_batch is None:
            per_batch = self.batches[executed_rows] = BatchStats()
        per_batch.add(input_ns, infer_ns, output_ns)

    def record_cache_hit(self, batch: int, total_ns: int) -> None:
        """One request answered from the response cache: a success and an inference, no execution (as Triton)."""
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += batch
        self.success.add(total_ns)
        self.cache_hit.add(total_ns)

    def record_failure(self, total_ns: int, code: str = "INTERNAL") -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.fail.add(total_ns)
        self.fail_codes[code] = self.fail_codes.get(code, 0) + 1

    def to_dict(self, load_time: bool = False) -> dict[str, Any]:
        """Triton's JSON form of one entry of ``model_stats``, the memory held as Triton's ``memory_usage``;
        ``load_time``: with inferd's ``load_ns`` too (REST; Triton's gRPC message has no such field)."""
        found = {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
                "cache_hit": self.cache_hit.to_dict(),
                "cache_miss": self.cache_miss.to_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stats.compute_input.to_dict(),
                    "compute_infer": stats.compute_infer.to_dict(),
                    "compute_output": stats.compute_output.to_dict(),
                }
                for size, stats in sorted(self.batches.items())
            ],
            "memory_usage": [{"type": "CPU", "id": 0, "byte_size": self.memory_bytes}] if self.memory_bytes else [],
        }
        if load_time:
            found["load_ns"] = self.load_ns
        return found
